"""The job database: what it refuses to open, and that it never changes a file it refuses."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import Profile
from rund_trio.jobs.state import JobSnapshot, JobState, OutputCounts
from rund_trio.jobs.store import DATABASE_NAME, SCHEMA_VERSION, JobStore
from rund_trio.logs.journal import Stream, encode_header
from rund_trio.logs.stored import scan_journal
from rund_trio.process.base import ResourceUsage
from tests.fakes import inline_store


def test_a_new_database_gets_the_schema_and_reopens(tmp_path: Path) -> None:
    JobStore.open(tmp_path).close()
    store = JobStore.open(tmp_path)
    assert store.totals() == (0, 0)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE recipes (name)")
    before = path.read_bytes()
    with pytest.raises(
        ConfigError, match=r"it is not a rund-trio job database\. Nothing was changed"
    ):
        JobStore.open(tmp_path)
    assert path.read_bytes() == before


def test_the_page_token_key_survives_a_reopen(tmp_path: Path) -> None:
    first = JobStore.open(tmp_path)
    key = first.token_key
    first.close()
    assert JobStore.open(tmp_path).token_key == key


async def test_a_job_recorded_as_running_is_marked_lost_with_its_whole_records(
    tmp_path: Path,
) -> None:
    store = inline_store(tmp_path)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    snapshot = JobSnapshot(
        job_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", argv=("sleep", "9"), pid=42,
        state=JobState.RUNNING, started_at=started, ended_at=None, exit_code=None,
        signal=None, stop_requested=False, usage=ResourceUsage(), output=OutputCounts(),
    )  # fmt: skip
    await store.insert(snapshot, frozenset({"DNS:alice"}))
    lost = store.mark_lost(lambda job_id: (11, 6), started)
    assert lost == [snapshot.job_id]
    found = store.find(snapshot.job_id, ["DNS:alice"])
    assert found is not None
    assert (found.snapshot.state, found.snapshot.killed, found.journal_size) == (
        JobState.LOST,
        True,
        11,
    )
    assert store.find(snapshot.job_id, ["DNS:bob"]) is None


def test_scanning_a_journal_stops_before_a_torn_or_zeroed_record(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    whole = encode_header(Stream.STDOUT, 3) + b"abc" + encode_header(Stream.STDERR, 2) + b"de"
    path.write_bytes(whole + encode_header(Stream.STDOUT, 100) + b"cut short")
    assert (scan_journal(path).size, scan_journal(path).payload) == (len(whole), 5)
    path.write_bytes(whole + bytes(4096))  # a tail a power cut zeroed
    assert scan_journal(path).size == len(whole)
    assert scan_journal(tmp_path / "missing.log").size == 0


async def test_flush_makes_a_start_durable_and_is_a_no_op_when_nothing_is_pending(
    tmp_path: Path,
) -> None:
    store = inline_store(tmp_path)
    commits: list[int] = []
    original = store._commit

    def counting(batch: list[object]) -> None:
        commits.append(len(batch))
        original(batch)  # type: ignore[arg-type]

    store._commit = counting  # type: ignore[method-assign]
    await store.flush()
    assert commits == []
    snapshot = JobSnapshot(
        job_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", argv=("true",), pid=1, state=JobState.RUNNING,
        started_at=datetime(2026, 1, 1, tzinfo=UTC), ended_at=None, exit_code=None,
        signal=None, stop_requested=False, usage=ResourceUsage(), output=OutputCounts(),
    )  # fmt: skip
    await store.insert(snapshot, frozenset({"DNS:alice"}))
    await store.flush()
    await store.flush()
    assert commits == [1, 1]  # the insert, then one sync; the second flush had nothing to do


@pytest.mark.parametrize("profile", list(Profile))
async def test_a_jobs_profile_is_read_back_as_it_was_recorded(
    tmp_path: Path, profile: Profile
) -> None:
    store = inline_store(tmp_path)
    snapshot = JobSnapshot(
        job_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", argv=("true",), pid=1, state=JobState.RUNNING,
        started_at=datetime(2026, 1, 1, tzinfo=UTC), ended_at=None, exit_code=None,
        signal=None, stop_requested=False, usage=ResourceUsage(), output=OutputCounts(),
        profile=profile,
    )  # fmt: skip
    await store.insert(snapshot, frozenset({"DNS:alice"}))
    found = store.find(snapshot.job_id, ["DNS:alice"])
    assert found is not None
    assert found.snapshot.profile is profile

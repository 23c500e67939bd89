"""The state directory: private, one daemon at a time, kept as it is found;
the files of a job are forgotten together, and orphans are set aside, never deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rund_trio.errors import ConfigError
from rund_trio.jobs.spec import new_job_id
from rund_trio.logs.state_dir import (
    default_state_dir,
    forget_job_files,
    journal_path,
    set_aside_orphans,
    state_directory,
)


def test_entering_a_state_dir_changes_nothing_in_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    files = [journal_path(state, new_job_id()), state / "notes.txt"]
    for path in files:
        path.write_bytes(b"kept")
    with state_directory(state) as entered:
        assert entered == state
        assert sorted(state.iterdir()) == sorted(files)


def test_orphans_are_moved_aside_with_every_file_of_their_job_and_nothing_else(
    tmp_path: Path,
) -> None:
    known, orphan = new_job_id(), new_job_id()
    for job_id in (known, orphan):
        journal_path(tmp_path, job_id).write_bytes(b"output")
        (tmp_path / f"{job_id}.idx").write_bytes(b"index")
    others = [tmp_path / "notes.txt", tmp_path / "not-a-ulid.log"]
    for path in others:
        path.write_text("not the daemon's")
    assert set_aside_orphans(tmp_path, {known}) == 1
    assert sorted(p.name for p in (tmp_path / "orphans").iterdir()) == [
        f"{orphan}.idx",
        f"{orphan}.log",
    ]
    assert journal_path(tmp_path, known).exists()
    assert all(path.exists() for path in others)


def test_forgetting_a_job_deletes_every_file_of_it_and_only_those(tmp_path: Path) -> None:
    gone, kept = new_job_id(), new_job_id()
    for job_id in (gone, kept):
        journal_path(tmp_path, job_id).write_bytes(b"output")
        (tmp_path / f"{job_id}.idx").write_bytes(b"index")
    forget_job_files(tmp_path, gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{kept}.idx", f"{kept}.log"]


def test_the_default_state_dir_follows_xdg_state_home_for_a_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "rund-trio"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/rund-trio")


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with state_directory(state):
        journal = journal_path(state, new_job_id())
        journal.write_bytes(b"live output")
        with (
            pytest.raises(ConfigError, match="another rund-trio daemon uses --state-dir"),
            state_directory(state),
        ):
            pass
        assert journal.exists(), "the refused daemon must not touch a live daemon's output"
    with state_directory(state):  # the lock went with the first
        pass


def test_a_fresh_state_dir_is_private_and_removed_at_exit() -> None:
    with state_directory(None) as made:
        assert made.stat().st_mode & 0o777 == 0o700
        journal_path(made, new_job_id()).write_bytes(b"output")
    assert not made.exists()

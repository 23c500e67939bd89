"""The state directory: private, one daemon at a time, and cleared of the job
output a daemon that did not shut down cleanly left in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rund_trio.errors import ConfigError
from rund_trio.jobs.spec import new_job_id
from rund_trio.logs.state_dir import journal_path, state_directory


def test_journals_an_earlier_daemon_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    stale = [journal_path(state, new_job_id()) for _ in range(3)]
    stale += [path.with_suffix(".idx") for path in stale]  # their indexes
    for path in stale:
        path.write_bytes(b"old output")
    others = [state / "notes.txt", state / "not-a-ulid.log", state / f"{new_job_id()}.txt"]
    for path in others:
        path.write_text("not the daemon's")
    with state_directory(state) as entered:
        assert entered == state
        assert sorted(state.iterdir()) == sorted(others)


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

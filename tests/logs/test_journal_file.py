"""A job's journal on disk: appends, the output cap, a full disk, followers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.logs.budget import Reserve
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.follower import follow
from rund_trio.logs.index import ENTRY_SIZE
from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import RECORD_OVERHEAD, JournalFile


async def read_all(journal: JournalFile) -> dict[Stream, bytes]:
    out: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}
    async for piece in follow(journal):
        out[piece.stream] += piece.data
    return out


async def test_the_journal_file_is_private_to_the_daemon(tmp_path: Path) -> None:
    JournalFile(tmp_path / "job.log", cap=None)
    assert (tmp_path / "job.log").stat().st_mode & 0o777 == 0o600


async def test_a_follower_reads_what_was_appended_then_ends_when_closed(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    journal.append(Stream.STDOUT, b"out")
    journal.append(Stream.STDERR, b"err")
    journal.close()
    assert await read_all(journal) == {Stream.STDOUT: b"out", Stream.STDERR: b"err"}


async def test_a_failed_write_is_counted_as_lost_and_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    journal.append(Stream.STDOUT, b"kept ")

    def disk_full(fd: int, buffers: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwritev", disk_full)
    journal.append(Stream.STDOUT, b"lost")
    journal.append(Stream.STDOUT, b"also lost")
    journal.close()
    assert (journal.book.recorded, journal.book.dropped) == (5, 13)
    assert journal.book.error == f"cannot write job output to {tmp_path}: No space left on device"
    assert (await read_all(journal))[Stream.STDOUT] == b"kept "


async def test_a_follower_that_is_cancelled_releases_its_descriptor(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    before = len(os.listdir("/proc/self/fd"))
    with trio.move_on_after(0.01):
        await read_all(journal)
    assert len(os.listdir("/proc/self/fd")) == before


async def test_journals_stop_recording_at_the_daemon_wide_output_total(tmp_path: Path) -> None:
    disk = StateDisk(tmp_path, max_total=2 * RECORD_OVERHEAD + 7, reserve=Reserve(0, None))
    first = JournalFile(tmp_path / "first.log", cap=None, disk=disk)
    second = JournalFile(tmp_path / "second.log", cap=None, disk=disk)
    first.append(Stream.STDOUT, b"12345")
    second.append(Stream.STDOUT, b"abcdef")
    first.append(Stream.STDOUT, b"more")
    first.close()
    second.close()
    disk.close()
    assert (await read_all(first))[Stream.STDOUT] == b"12345"
    assert (await read_all(second))[Stream.STDOUT] == b"ab"
    assert (second.book.recorded, second.book.dropped) == (2, 4)
    assert first.book.dropped == 4
    assert second.book.error is not None and "--max-output-total" in second.book.error
    assert disk.budget.used == first.size + second.size + ENTRY_SIZE * 2

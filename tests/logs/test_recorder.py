"""Recording a job's pipe: spliced by the kernel, under the same caps."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rund_trio.logs.follower import follow
from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.recorder import record
from rund_trio.process.pipes import open_output_pipe


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A job's output pipe (read end non-blocking, as the daemon has it); the
    test closes the write end."""
    read_end, write_end = open_output_pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    os.close(read_end)


async def recorded(journal: JournalFile) -> list[tuple[Stream, bytes]]:
    journal.close()
    return [(piece.stream, bytes(piece.data)) async for piece in follow(journal)]


async def test_bytes_spliced_from_a_pipe_are_read_back_as_written(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    journal = JournalFile(tmp_path / "job.log", cap=None)
    os.write(write_end, b"hello")
    os.close(write_end)
    assert journal.append_from_pipe(Stream.STDERR, read_end) == 5
    assert await recorded(journal) == [(Stream.STDERR, b"hello")]


async def test_an_empty_pipe_blocks_and_a_closed_one_ends(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    journal = JournalFile(tmp_path / "job.log", cap=None)
    with pytest.raises(BlockingIOError):
        journal.append_from_pipe(Stream.STDOUT, read_end)
    os.close(write_end)
    assert journal.append_from_pipe(Stream.STDOUT, read_end) == 0


async def test_splicing_stops_at_the_cap_and_counts_the_rest_as_dropped(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    journal = JournalFile(tmp_path / "job.log", cap=3)
    os.write(write_end, b"hello")
    os.close(write_end)
    taken = journal.append_from_pipe(Stream.STDOUT, read_end)
    taken += journal.append_from_pipe(Stream.STDOUT, read_end)
    assert taken == 5
    assert (journal.book.recorded, journal.book.dropped) == (3, 2)
    assert await recorded(journal) == [(Stream.STDOUT, b"hel")]


async def test_record_drains_a_pipe_into_the_journal_until_its_end(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB: more than the pipe holds

    def write_all() -> None:
        os.set_blocking(write_end, True)
        os.write(write_end, payload)
        os.close(write_end)

    journal = JournalFile(tmp_path / "job.log", cap=None)
    writer = threading.Thread(target=write_all)
    writer.start()
    await record(trio.lowlevel.FdStream(os.dup(read_end)), Stream.STDOUT, journal)
    writer.join()
    assert b"".join(data for _, data in await recorded(journal)) == payload

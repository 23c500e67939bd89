"""Recording a job's pipe: spliced by the kernel, under the same caps."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.logs.follower import follow
from rund_trio.logs.index import read_entries
from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.recorder import QUIET, record, record_streams
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


def records(journal: JournalFile) -> list[tuple[Stream, bytes]]:
    """Each record as written, through the index (``follow`` joins records)."""
    payload = journal.path.read_bytes()
    index_fd = os.open(journal.index_path, os.O_RDONLY)
    try:
        entries = read_entries(index_fd, 0, journal.records)
    finally:
        os.close(index_fd)
    return [(e.stream, payload[e.payload_offset : e.end]) for e in entries]


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


@pytest.fixture
def two_pipes() -> Iterator[dict[Stream, tuple[int, int]]]:
    """A job's stdout and stderr pipes; the test closes the write ends."""
    pipes = {stream: open_output_pipe() for stream in Stream}
    for read_end, _ in pipes.values():
        os.set_blocking(read_end, False)
    yield pipes
    for read_end, _ in pipes.values():
        os.close(read_end)


async def test_both_streams_are_recorded_in_the_order_they_were_written_between_drains(
    tmp_path: Path, two_pipes: dict[Stream, tuple[int, int]]
) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    out, err = two_pipes[Stream.STDOUT][1], two_pipes[Stream.STDERR][1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_streams, streams, journal)
        for number, (fd, line) in enumerate([(out, b"o1\n"), (err, b"e1\n"), (out, b"o2\n")]):
            os.write(fd, line)
            await journal.wait_for_records(number)
        os.close(out)
        os.close(err)
    assert await recorded(journal) == [
        (Stream.STDOUT, b"o1\n"),
        (Stream.STDERR, b"e1\n"),
        (Stream.STDOUT, b"o2\n"),
    ]


async def test_output_of_both_streams_found_in_one_drain_is_recorded_stdout_first(
    tmp_path: Path, two_pipes: dict[Stream, tuple[int, int]]
) -> None:
    """The documented limit: the kernel does not say which pipe was written first."""
    journal = JournalFile(tmp_path / "job.log", cap=None)
    os.write(two_pipes[Stream.STDERR][1], b"e\n")
    os.write(two_pipes[Stream.STDOUT][1], b"o\n")
    for _, write_end in two_pipes.values():
        os.close(write_end)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    await record_streams(streams, journal)
    assert await recorded(journal) == [(Stream.STDOUT, b"o\n"), (Stream.STDERR, b"e\n")]


async def test_recording_both_streams_goes_on_after_one_of_them_ends(
    tmp_path: Path, two_pipes: dict[Stream, tuple[int, int]]
) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    out, err = two_pipes[Stream.STDOUT][1], two_pipes[Stream.STDERR][1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_streams, streams, journal)
        os.close(out)
        await trio.testing.wait_all_tasks_blocked()
        os.write(err, b"still here")
        os.close(err)
    assert await recorded(journal) == [(Stream.STDERR, b"still here")]


async def test_output_written_while_a_pipe_is_left_to_fill_is_recorded_as_one_batch(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    two_pipes: dict[Stream, tuple[int, int]],
) -> None:
    journal = JournalFile(tmp_path / "job.log", cap=None)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    out, err = two_pipes[Stream.STDOUT][1], two_pipes[Stream.STDERR][1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_streams, streams, journal)
        os.write(out, b"a")
        await journal.wait_for_records(0)
        first_drain = trio.current_time()
        os.write(out, b"b")
        os.write(out, b"c")
        await journal.wait_for_records(1)
        assert trio.current_time() == pytest.approx(first_drain + QUIET)
        os.close(out)
        os.close(err)
    assert records(journal) == [(Stream.STDOUT, b"a"), (Stream.STDOUT, b"bc")]


async def test_output_after_a_pause_is_recorded_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, pipe: tuple[int, int]
) -> None:
    read_end, write_end = pipe
    journal = JournalFile(tmp_path / "job.log", cap=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, trio.lowlevel.FdStream(os.dup(read_end)), Stream.STDOUT, journal)
        os.write(write_end, b"first")
        await journal.wait_for_records(0)
        await trio.sleep(QUIET)
        written_at = trio.current_time()
        os.write(write_end, b"second")
        await journal.wait_for_records(1)
        assert trio.current_time() == written_at
        os.close(write_end)
    assert records(journal) == [(Stream.STDOUT, b"first"), (Stream.STDOUT, b"second")]


async def test_a_write_to_the_other_stream_is_recorded_at_once_after_what_the_first_held(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    two_pipes: dict[Stream, tuple[int, int]],
) -> None:
    """Batching keeps the order exact between streams: the other stream's
    write wakes a drain of both at once."""
    journal = JournalFile(tmp_path / "job.log", cap=None)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    out, err = two_pipes[Stream.STDOUT][1], two_pipes[Stream.STDERR][1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_streams, streams, journal)
        os.write(out, b"o1\n")
        await journal.wait_for_records(0)
        first_drain = trio.current_time()
        os.write(out, b"o2\n")  # stdout is left to fill for QUIET
        await trio.testing.wait_all_tasks_blocked()
        os.write(err, b"e1\n")
        await journal.wait_for_records(2)
        assert trio.current_time() == first_drain
        os.close(out)
        os.close(err)
    assert records(journal) == [
        (Stream.STDOUT, b"o1\n"),
        (Stream.STDOUT, b"o2\n"),
        (Stream.STDERR, b"e1\n"),
    ]


async def test_only_one_stream_at_a_time_is_left_to_fill(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    two_pipes: dict[Stream, tuple[int, int]],
) -> None:
    """While stdout fills, every write to stderr is drained at once, so a job
    alternating between the streams keeps its order."""
    journal = JournalFile(tmp_path / "job.log", cap=None)
    streams = {s: trio.lowlevel.FdStream(os.dup(r)) for s, (r, _) in two_pipes.items()}
    out, err = two_pipes[Stream.STDOUT][1], two_pipes[Stream.STDERR][1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_streams, streams, journal)
        os.write(out, b"o1\n")
        await journal.wait_for_records(0)
        first_drain = trio.current_time()
        for number, line in enumerate([b"e1\n", b"e2\n"], start=1):
            os.write(err, line)
            await journal.wait_for_records(number)
            assert trio.current_time() == first_drain
        os.close(out)
        os.close(err)
    assert records(journal) == [
        (Stream.STDOUT, b"o1\n"),
        (Stream.STDERR, b"e1\n"),
        (Stream.STDERR, b"e2\n"),
    ]

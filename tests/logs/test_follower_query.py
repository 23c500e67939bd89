"""Log options: a snapshot, the last lines, output since a time, timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rund_trio.errors import InvalidRequest
from rund_trio.logs.follower import follow_query
from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.query import LogQuery, validate_log_query

OUT, ERR = Stream.STDOUT, Stream.STDERR


def counting_clock() -> Iterator[int]:
    """Record number N is recorded at time 10 * (N + 1)."""
    yield from range(10, 10**9, 10)


def journal_of(tmp_path: Path, *records: tuple[Stream, bytes], closed: bool = True) -> JournalFile:
    clock = counting_clock()
    journal = JournalFile(tmp_path / "job.log", cap=None, clock=lambda: next(clock))
    for stream, data in records:
        journal.append(stream, data)
    if closed:
        journal.close()
    return journal


async def read(journal: JournalFile, query: LogQuery) -> list[tuple[Stream, bytes]]:
    return [(piece.stream, bytes(piece.data)) async for piece in follow_query(journal, query)]


async def text(journal: JournalFile, query: LogQuery) -> bytes:
    return b"".join(data for _, data in await read(journal, query))


MIXED = ((OUT, b"a\nb"), (ERR, b"e1\n"), (OUT, b"\nc\n"), (ERR, b"e2"))


async def test_without_follow_only_what_is_recorded_now_is_sent(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"now\n"), closed=False)
    with trio.fail_after(1):
        assert await read(journal, LogQuery(follow=False)) == [(OUT, b"now\n")]


async def test_a_follower_gets_the_output_in_the_order_it_was_recorded(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, *MIXED)
    assert await read(journal, LogQuery()) == list(MIXED)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b""),
        (1, b"e2"),
        (2, b"c\ne2"),
        (3, b"\nc\ne2"),  # the lines are a, be1, (empty), c, e2
        (4, b"b" + b"e1\n" + b"\nc\ne2"),
        (5, b"a\nb" + b"e1\n" + b"\nc\ne2"),
        (100, b"a\nb" + b"e1\n" + b"\nc\ne2"),
    ],
)
async def test_tail_starts_at_the_last_lines_of_both_streams_together(
    tmp_path: Path, lines: int, expected: bytes
) -> None:
    journal = journal_of(tmp_path, *MIXED)
    assert await text(journal, LogQuery(tail_lines=lines)) == expected


async def test_tail_does_not_count_the_final_newline_as_an_empty_line(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"1\n2\n3\n"))
    assert await text(journal, LogQuery(tail_lines=2)) == b"2\n3\n"


async def test_tail_starting_inside_a_record_keeps_that_records_stream(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (ERR, b"x\ny\n"), (OUT, b"z\n"))
    assert await read(journal, LogQuery(tail_lines=2)) == [(ERR, b"y\n"), (OUT, b"z\n")]


async def test_since_starts_at_the_first_record_recorded_at_or_after_it(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"1"), (ERR, b"2"), (OUT, b"3"), (OUT, b"4"))
    assert await text(journal, LogQuery(since=20)) == b"234"
    assert await text(journal, LogQuery(since=21)) == b"34"
    assert await text(journal, LogQuery(since=41)) == b""


async def test_since_and_tail_together_start_at_the_later_of_both(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"1\n"), (OUT, b"2\n"), (OUT, b"3\n"))
    assert await text(journal, LogQuery(since=30, tail_lines=3)) == b"3\n"
    assert await text(journal, LogQuery(since=10, tail_lines=2)) == b"2\n3\n"


async def test_timestamps_give_each_piece_as_recorded_with_its_time(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"a"), (OUT, b"b"), (ERR, b"c"))
    pieces = [
        (piece.stream, bytes(piece.data), piece.recorded_at)
        async for piece in follow_query(journal, LogQuery(timestamps=True))
    ]
    assert pieces == [(OUT, b"a", 10), (OUT, b"b", 20), (ERR, b"c", 30)]


async def test_timestamps_with_tail_start_inside_a_record(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, (OUT, b"x\ny\n"))
    pieces = [
        (bytes(piece.data), piece.recorded_at)
        async for piece in follow_query(journal, LogQuery(tail_lines=1, timestamps=True))
    ]
    assert pieces == [(b"y\n", 10)]


@pytest.mark.parametrize("timestamps", [False, True])
async def test_a_tail_that_follows_gets_live_output_after_it(
    tmp_path: Path, timestamps: bool
) -> None:
    journal = journal_of(tmp_path, (OUT, b"old\n"), (OUT, b"last\n"), closed=False)
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def follower() -> None:
            async for piece in follow_query(journal, LogQuery(tail_lines=1, timestamps=timestamps)):
                received.append(bytes(piece.data))

        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        journal.append(ERR, b"live\n")
        journal.close()
    assert b"".join(received) == b"last\nlive\n"


@pytest.mark.parametrize("timestamps", [False, True])
async def test_a_snapshot_ends_at_what_was_recorded_when_it_started(
    tmp_path: Path, timestamps: bool
) -> None:
    journal = journal_of(tmp_path, (OUT, b"1\n"), closed=False)
    pieces = follow_query(journal, LogQuery(follow=False, timestamps=timestamps))
    assert bytes((await anext(pieces)).data) == b"1\n"
    journal.append(OUT, b"2\n")
    assert [piece async for piece in pieces] == []


def test_a_negative_tail_is_refused_with_what_to_ask_instead() -> None:
    with pytest.raises(InvalidRequest, match="tail_lines -1 is negative: ask for 0 or more"):
        validate_log_query(LogQuery(tail_lines=-1), now=0)


def test_since_in_the_future_is_refused_naming_both_times() -> None:
    with pytest.raises(InvalidRequest, match=r"since 1970-01-01T00:00:02Z is in the future"):
        validate_log_query(LogQuery(since=2 * 10**9), now=10**9)


def test_since_now_is_accepted() -> None:
    assert validate_log_query(LogQuery(since=10**9), now=10**9).since == 10**9

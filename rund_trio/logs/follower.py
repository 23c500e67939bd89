"""Following a job's journal until the job's output ends.

Two ways to read it: ``follow`` reads the journal file in large blocks (the
whole output, the fast path), ``follow_records`` goes record by record through
the index to give each piece the time it was recorded. ``start_of`` finds
where a ``LogQuery`` starts (``--since``: a binary search in the index,
``--tail``: the records read backwards from the last one).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from rund_trio.logs.index import first_recorded_at_or_after, read_entries, read_entry
from rund_trio.logs.journal import Piece, RecordDecoder, coalesce
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.query import WHOLE_LOG, LogQuery

MAX_CHUNK = 1024 * 1024
READ_SIZE = 1024 * 1024
ENTRIES_PER_READ = 4096


@dataclass(frozen=True, order=True)
class Position:
    """A byte of the output: record ``record``'s payload byte ``skip``."""

    record: int
    skip: int = 0


async def follow(
    journal: JournalFile, *, max_chunk: int = MAX_CHUNK
) -> AsyncGenerator[Piece, None]:
    """Yield the job's output from the beginning, then live, as chunks of at
    most ``max_chunk`` bytes; end once the journal is closed and fully read."""
    async for piece in follow_query(journal, WHOLE_LOG, max_chunk=max_chunk):
        yield piece


async def follow_query(
    journal: JournalFile, query: LogQuery, *, max_chunk: int = MAX_CHUNK
) -> AsyncGenerator[Piece, None]:
    """Yield the part of the job's output ``query`` asks for, in the order it
    was recorded: from its start (``start_of``) to what is recorded now, then,
    if it follows, live until the journal is closed and fully read.

    Without timestamps adjacent pieces of one stream are joined into chunks of
    at most ``max_chunk`` bytes; with them each piece is as recorded (split at
    ``max_chunk``) and carries its ``recorded_at``.

    Each follower reads the files through its own descriptors at its own pace,
    so a slow one delays nobody. Cancellation (or closing the generator)
    releases the descriptors.
    """
    fd = os.open(journal.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        index_fd = os.open(journal.index_path, os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(fd)
        raise
    try:
        # Both counts at once (no checkpoint between): a consistent snapshot.
        records, size = journal.records, journal.size
        start = Position(0) if query.whole else start_of(fd, index_fd, records, query)
        end = None if query.follow else records
        if query.timestamps:
            pieces = _records(journal, fd, index_fd, start, end, max_chunk)
        else:
            end_offset = None if query.follow else size
            pieces = _blocks(journal, fd, index_fd, start, end_offset, max_chunk)
        async for piece in pieces:
            yield piece
    finally:
        os.close(index_fd)
        os.close(fd)


def start_of(fd: int, index_fd: int, records: int, query: LogQuery) -> Position:
    """Where ``query``'s output starts among the first ``records`` records."""
    start = Position(0)
    if query.since is not None:
        start = Position(first_recorded_at_or_after(index_fd, records, query.since))
    if query.tail_lines is not None:
        start = max(start, _tail_start(fd, index_fd, records, query.tail_lines))
    return start


def _tail_start(fd: int, index_fd: int, records: int, lines: int) -> Position:
    """The start of the last ``lines`` lines of the output (a final line
    without a newline counts), reading records backwards from the last."""
    if lines == 0:
        return Position(records)
    newlines_to_pass = lines
    last_byte = True
    for number in reversed(range(records)):
        entry = read_entry(index_fd, number)
        data = os.pread(fd, entry.length, entry.payload_offset)
        searched_up_to = len(data)
        if last_byte:
            last_byte = False
            if data.endswith(b"\n"):
                searched_up_to -= 1
        while (at := data.rfind(b"\n", 0, searched_up_to)) >= 0:
            newlines_to_pass -= 1
            if newlines_to_pass == 0:
                return Position(number, at + 1) if at + 1 < len(data) else Position(number + 1)
            searched_up_to = at
    return Position(0)


async def _blocks(
    journal: JournalFile,
    fd: int,
    index_fd: int,
    start: Position,
    end: int | None,
    max_chunk: int,
) -> AsyncGenerator[Piece, None]:
    """The journal from ``start`` to byte ``end`` (None: until closed), read in
    large blocks and decoded."""
    if start == Position(0):
        decoder, offset = RecordDecoder(), 0
    elif start.record < journal.records:
        entry = read_entry(index_fd, start.record)
        decoder = RecordDecoder.inside(entry.stream, entry.length - start.skip)
        offset = entry.payload_offset + start.skip
    else:  # past the last record written when the call started
        decoder = RecordDecoder()
        offset = read_entry(index_fd, start.record - 1).end
    while True:
        limit = journal.size if end is None else end
        if offset < limit:
            data = os.pread(fd, min(READ_SIZE, limit - offset), offset)
            offset += len(data)
            for chunk in coalesce(decoder.feed(data), max_chunk):
                yield chunk
        elif end is not None or journal.closed:
            return
        else:
            await journal.wait_beyond(offset)


async def _records(
    journal: JournalFile,
    fd: int,
    index_fd: int,
    start: Position,
    end: int | None,
    max_chunk: int,
) -> AsyncGenerator[Piece, None]:
    """Records ``start`` to ``end`` (None: until closed) one by one, each with
    the time it was recorded."""
    number, skip = start.record, start.skip
    while True:
        limit = journal.records if end is None else end
        if number < limit:
            for entry in read_entries(index_fd, number, min(ENTRIES_PER_READ, limit - number)):
                offset = entry.payload_offset + skip
                left = entry.length - skip
                skip = 0
                while left > 0:
                    data = os.pread(fd, min(max_chunk, left), offset)
                    offset += len(data)
                    left -= len(data)
                    yield Piece(entry.stream, data, entry.recorded_at)
                number += 1
        elif end is not None or journal.closed:
            return
        else:
            await journal.wait_for_records(number)

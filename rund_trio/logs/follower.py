"""Following a job's journal from its first byte until the job's output ends."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator

from rund_trio.logs.journal import Piece, RecordDecoder, coalesce
from rund_trio.logs.journal_file import JournalFile

MAX_CHUNK = 1024 * 1024
READ_SIZE = 1024 * 1024


async def follow(
    journal: JournalFile, *, max_chunk: int = MAX_CHUNK
) -> AsyncGenerator[Piece, None]:
    """Yield the job's output from the beginning, then live, as chunks of at
    most ``max_chunk`` bytes; end once the journal is closed and fully read.

    Each follower reads the file through its own descriptor at its own pace, so
    a slow one delays nobody. Cancellation (or closing the generator) releases
    the descriptor.
    """
    fd = os.open(journal.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        decoder = RecordDecoder()
        offset = 0
        while True:
            if offset < journal.size:
                data = os.pread(fd, min(READ_SIZE, journal.size - offset), offset)
                offset += len(data)
                for chunk in coalesce(decoder.feed(data), max_chunk):
                    yield chunk
            elif journal.closed:
                return
            else:
                await journal.wait_beyond(offset)
    finally:
        os.close(fd)

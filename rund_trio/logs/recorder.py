"""Draining a job's output pipe into its journal."""

from __future__ import annotations

import trio

from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import JournalFile

READ_SIZE = 256 * 1024


async def record(pipe: trio.abc.ReceiveStream, stream: Stream, journal: JournalFile) -> None:
    """Copy everything from ``pipe`` into ``journal`` until end of file.

    The pipe is drained as fast as the job writes, whatever subscribers do.
    Cancellation stops the copy; every chunk already read is in the journal.
    """
    while data := await pipe.receive_some(READ_SIZE):
        journal.append(stream, data)

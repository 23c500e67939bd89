"""Draining a job's output pipe into its journal."""

from __future__ import annotations

import trio

from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import JournalFile

READ_SIZE = 256 * 1024


async def record(pipe: trio.abc.ReceiveStream, stream: Stream, journal: JournalFile) -> None:
    """Copy everything from ``pipe`` into ``journal`` until end of file.

    The pipe is drained as fast as the job writes, whatever subscribers do;
    a pipe with a descriptor is spliced into the journal by the kernel.
    Cancellation stops the copy; every chunk already taken is in the journal.
    """
    if isinstance(pipe, trio.lowlevel.FdStream):
        await _splice_all(pipe.fileno(), stream, journal)
        return
    while data := await pipe.receive_some(READ_SIZE):
        journal.append(stream, data)


DRAIN_PER_TURN = 8 * 1024 * 1024
"""Bytes a recorder may take before letting other tasks run: more than each
Log subscriber sends per turn, so a job is not slowed by its own subscribers."""


async def _splice_all(pipe: int, stream: Stream, journal: JournalFile) -> None:
    taken = 0
    while True:
        try:
            moved = journal.append_from_pipe(stream, pipe)
        except BlockingIOError:
            taken = 0
            await trio.lowlevel.wait_readable(pipe)
            continue
        if not moved:
            return
        taken += moved
        if taken >= DRAIN_PER_TURN:
            taken = 0
            await trio.lowlevel.checkpoint()

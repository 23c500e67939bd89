"""Draining a job's output pipes into its journal.

How exact the order of stdout and stderr is: both pipes of a job are drained
together, never concurrently. Each drain asks the kernel which pipes hold
data (one ``poll``) and then takes one piece from each of them, stdout first. So

* pieces read in different drains are in the order the job wrote them, except
  that a piece holds everything its pipe had when it was read: output written
  to one stream while the daemon was reading the other in the same drain
  (a few microseconds when the daemon keeps up) can be recorded before
  output written just before it to that other stream;
* within one drain, output of the two streams written between two drains is
  recorded stdout first, whatever order the job wrote it in.

A job that writes a line to one stream and then a line to the other with any
pause between (a ``printf``, a shell's ``echo``) is recorded in its order; a
program that buffers its output decides the order itself when it flushes.

Batching does not loosen this: a pipe whose drain found little is left to fill
for ``QUIET`` (1 ms) before it wakes the next drain, so a job writing many
small pieces has them recorded in large records; but only one pipe at a time
is left to fill, and a write to the other wakes a drain of both at once, which
records first what the quiet pipe holds (written before it). Output after a
pause is recorded at once.
"""

from __future__ import annotations

import math
import select
from collections.abc import Mapping

import trio

from rund_trio.logs.journal import Stream
from rund_trio.logs.journal_file import SPLICE_SIZE, JournalFile

READ_SIZE = 256 * 1024


async def record_streams(
    pipes: Mapping[Stream, trio.abc.ReceiveStream], journal: JournalFile
) -> None:
    """Copy everything from each stream's pipe into ``journal`` until the end
    of all of them.

    The pipes are drained as fast as the job writes, whatever subscribers do;
    pipes with a descriptor are spliced into the journal by the kernel, in the
    order the module docstring describes. Cancellation stops the copy; every
    chunk already taken is in the journal.
    """
    if all(isinstance(pipe, trio.lowlevel.FdStream) for pipe in pipes.values()):
        fds = {stream: pipe.fileno() for stream, pipe in pipes.items()}  # type: ignore[attr-defined]
        await _splice_all(fds, journal)
        return
    async with trio.open_nursery() as nursery:
        for stream, pipe in pipes.items():
            nursery.start_soon(record, pipe, stream, journal)


async def record(pipe: trio.abc.ReceiveStream, stream: Stream, journal: JournalFile) -> None:
    """Copy everything from one ``pipe`` into ``journal`` until end of file."""
    if isinstance(pipe, trio.lowlevel.FdStream):
        await _splice_all({stream: pipe.fileno()}, journal)
        return
    while data := await pipe.receive_some(READ_SIZE):
        journal.append(stream, data)


DRAIN_PER_TURN = 8 * 1024 * 1024
"""Bytes a recorder may take before letting other tasks run: more than each
Log subscriber sends per turn, so a job is not slowed by its own subscribers."""
QUIET = 0.001
"""How long a pipe is left to fill after a drain it woke took less than
``BATCH`` bytes: a job writing small pieces fast has them recorded in batches
(at most a thousand drains a second), not one record and one wakeup per write,
which cost more than the splice itself. Output after a pause is recorded at
once, and a write to another pipe still wakes a drain of all at once (see the
module docstring)."""
BATCH = 256 * 1024
"""A drain taking at least this much had a writer ahead of it: the next
follows at once (a fast writer's pipe is drained as it fills)."""


async def _splice_all(pipes: Mapping[Stream, int], journal: JournalFile) -> None:
    drain = _Drain(pipes, journal)
    async with trio.open_nursery() as nursery:
        for pipe in pipes.values():
            nursery.start_soon(drain.wait_and_drain, pipe)


class _Drain:
    """The pipes of a job, drained together in the order the module docstring
    describes. One task waits on each pipe (trio lets only one task wait on a
    descriptor); whichever wakes drains them all, without a checkpoint, so
    drains never interleave. ``poll(2)`` says which pipes hold data: no
    descriptor of its own, unlike an epoll set."""

    def __init__(self, pipes: Mapping[Stream, int], journal: JournalFile) -> None:
        self._open = dict(sorted(pipes.items()))  # stdout first
        self._journal = journal
        self._poller = select.poll()
        for pipe in self._open.values():
            self._poller.register(pipe, select.POLLIN)
        # At most one pipe is left to fill at a time, so that a write to any
        # other wakes a drain at once: the order between streams stays exact.
        self._quiet: int | None = None
        self._quiet_until = -math.inf

    async def wait_and_drain(self, pipe: int) -> None:
        """Drain whenever ``pipe`` holds data, until every pipe ended; a small
        drain leaves ``pipe`` ``QUIET`` to fill before the next, unless another
        pipe is being left to fill already. Cancellation stops it; every chunk
        taken is in the journal."""
        while pipe in self._open.values():
            await trio.lowlevel.wait_readable(pipe)
            if self._quiet == pipe:
                await trio.sleep_until(self._quiet_until)
            if self._drain() < BATCH and (
                self._quiet in (None, pipe) or self._quiet_until <= trio.current_time()
            ):
                self._quiet, self._quiet_until = pipe, trio.current_time() + QUIET
            elif self._quiet == pipe:
                self._quiet = None

    def _drain(self) -> int:
        """Take what the pipes hold, one splice per pipe per pass, passes
        repeated while a splice filled a whole chunk (the pipe may hold more)
        and less than ``DRAIN_PER_TURN`` was taken. Returns the bytes taken.
        Stopping once no splice was full keeps records large: a writer racing
        the drain would otherwise be chased in small pieces."""
        taken = 0
        while self._open and taken < DRAIN_PER_TURN:
            ready = {fd for fd, _ in self._poller.poll(0)}
            full = False
            for stream in [stream for stream, pipe in self._open.items() if pipe in ready]:
                pipe = self._open[stream]
                try:
                    moved = self._journal.append_from_pipe(stream, pipe)
                except BlockingIOError:
                    continue
                if not moved:  # its end: the writers are gone
                    self._poller.unregister(pipe)
                    del self._open[stream]
                full = full or moved >= SPLICE_SIZE
                taken += moved
            if not full:
                break
        return taken

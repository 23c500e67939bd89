"""A job's input side: the daemon's end of its stdin pipe or of its
pseudo-terminal, and the one Input stream at a time that feeds it.

``open_stdio`` makes both ends before the job is spawned: the job's end goes
into its ``ProcessSpec`` (``child_stdin``/``child_terminal``) and is closed by
``release_child_ends`` once the spawn returned; the daemon's end stays with
the ``JobStdio`` until the job's task closes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import termios
from collections.abc import AsyncIterable

import trio

from rund_trio.errors import FailedPrecondition
from rund_trio.jobs.spec import Terminal
from rund_trio.process.pipes import open_output_pipe


class TerminalMaster(trio.abc.ReceiveStream):
    """The daemon's end of a job's pseudo-terminal: what the job writes to
    its terminal is read here, what is sent here is typed into it.

    Reading returns end of file once every process closed the terminal's
    slave end (the kernel answers EIO there)."""

    def __init__(self, master_fd: int) -> None:
        self._fd = master_fd
        self._stream = trio.lowlevel.FdStream(master_fd)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as error:
            cause = error.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EIO:
                return b""
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size (TIOCSWINSZ); the kernel sends SIGWINCH to the
        terminal's foreground process group. Never blocks."""
        set_window_size(self._fd, rows, cols)

    async def aclose(self) -> None:
        await self._stream.aclose()


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class JobStdio:
    """The daemon's side of a job's stdin (a pipe) and/or terminal.

    ``feed`` writes one Input stream at a time; ``close`` ends it for good.
    Cancellation of ``feed`` loses no byte it reported written."""

    def __init__(
        self,
        *,
        stdin_pipe: trio.lowlevel.FdStream | None,
        terminal: TerminalMaster | None,
        feedable: bool,
    ) -> None:
        self._pipe = stdin_pipe
        self.terminal = terminal
        self.feedable = feedable
        """Input may feed it: the job was started with stdin."""
        self.closed = False
        """Its stdin reached end of input (an Input stream ended) or the job ended."""
        self._busy = False
        self._feeding: trio.CancelScope | None = None

    @property
    def open(self) -> bool:
        return self.feedable and not self.closed

    async def feed(self, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` in order into the job's stdin, each once the
        previous one was taken by the pipe or terminal, so a job that does not
        read holds back the sender and nothing accumulates here. At the end of
        ``chunks`` the stdin pipe is closed (the job reads end of file); a
        terminal stays open (a terminal's end of input is a byte, Ctrl-D).
        Returns the bytes written.

        The job's end decides by where the feed is, not by timing: ended
        while the feed waits for its next chunk, every byte it was given was
        written, and the feed returns their count (the end of ``chunks`` may
        still be on its way: a job that reads one line and exits is fed
        successfully); ended while a chunk is being written (the job did not
        take it), ``FailedPrecondition``.

        ``FailedPrecondition`` also if the job has no stdin to feed, another
        Input feeds it, or its stdin was closed. If the caller is cancelled,
        stdin stays open for a later Input."""
        if not self.feedable:
            raise FailedPrecondition(
                "this job was started without stdin (its stdin is /dev/null): start it with -i"
            )
        if self.closed:
            raise FailedPrecondition("this job's stdin is closed: its input ended, or it ended")
        if self._busy:
            raise FailedPrecondition("another client is feeding this job's stdin")
        sink: trio.abc.SendStream | TerminalMaster | None = (
            self.terminal if self.terminal is not None else self._pipe
        )
        assert sink is not None
        self._busy = True
        written = 0
        writing = False
        try:
            with trio.CancelScope() as self._feeding:
                async for data in chunks:
                    writing = True
                    try:
                        await sink.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise _ended() from None
                    writing = False
                    written += len(data)
                if self.terminal is None:
                    await self.close()
                return written
            # ``aclose`` cancelled it: the job ended.
            if writing:
                raise _ended()
            return written
        finally:
            self._busy = False
            self._feeding = None

    async def close(self) -> None:
        """End the job's input: its stdin pipe's write end is closed (a
        writer blocked in ``feed`` wakes up with ``FailedPrecondition``).
        The terminal stays open: ``aclose`` releases it."""
        self.closed = True
        if self._pipe is not None:
            await self._pipe.aclose()

    async def aclose(self) -> None:
        """Release everything (the job ended); an Input stream still feeding
        it ends with ``FailedPrecondition``."""
        if self._feeding is not None:
            self._feeding.cancel()
        await self.close()
        if self.terminal is not None:
            await self.terminal.aclose()


def _ended() -> FailedPrecondition:
    return FailedPrecondition("the job's stdin was closed: the job ended or closed it")


class ChildEnds:
    """The job's ends of its stdio, to put in its ``ProcessSpec``."""

    def __init__(self, stdin: int | None = None, terminal: int | None = None) -> None:
        self.stdin = stdin
        self.terminal = terminal

    def close(self) -> None:
        """Close the job's ends in the daemon (after the spawn returned): the
        daemon's ends then see end of file when the job's processes are gone."""
        for fd in (self.stdin, self.terminal):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.terminal = None


def open_stdio(stdin: bool, terminal: Terminal | None) -> tuple[JobStdio | None, ChildEnds]:
    """The pipe or pseudo-terminal a job's stdio needs, both ends close-on-exec;
    (None, no ends) for a job with neither (its stdin is /dev/null)."""
    if terminal is not None:
        master, slave = os.openpty()  # both non-inheritable
        try:
            set_window_size(master, terminal.rows, terminal.cols)
            master_end = TerminalMaster(master)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return JobStdio(stdin_pipe=None, terminal=master_end, feedable=stdin), ChildEnds(
            terminal=slave
        )
    if stdin:
        read_end, write_end = open_output_pipe()
        return JobStdio(
            stdin_pipe=trio.lowlevel.FdStream(write_end), terminal=None, feedable=True
        ), ChildEnds(stdin=read_end)
    return None, ChildEnds()

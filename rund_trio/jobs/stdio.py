"""A job's input side: the daemon's end of its stdin pipe or of its
pseudo-terminal, and the one Input stream at a time that feeds it.

``open_stdio`` makes both ends before the job is spawned: the job's end goes
into its ``ProcessSpec`` (``stdin_fd``/``terminal_fd``) and is closed by
``ChildEnds.close`` once the spawn returned; the daemon's end stays with
the ``JobStdio`` until the job's task closes it. A contained job's terminal
is made inside the job, in its own devpts, so that its name exists there
(``tty`` says ``/dev/pts/0``): its end is then a socket the master comes
back through (``TerminalMaster``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import AsyncIterable

import trio

from rund_trio.errors import FailedPrecondition
from rund_trio.isolation.wire import FD_SIZE, received_fds
from rund_trio.jobs.spec import Terminal
from rund_trio.process.pipes import open_output_pipe


class TerminalMaster(trio.abc.ReceiveStream):
    """The daemon's end of a job's pseudo-terminal: what the job writes to
    its terminal is read here, what is sent here is typed into it.

    Reading returns end of file once every process closed the terminal's
    slave end (the kernel answers EIO there).

    A contained job's terminal is made inside the job (in its own devpts,
    where its name exists): then this starts with ``channel``, the socket
    the job's ``rund-init`` sends the master through before the job's
    program starts (``rund_trio.isolation.execute``). The first read, write
    or close takes it; a job that ended without sending one has a terminal
    at end of file, which refuses input."""

    def __init__(
        self, master_fd: int | None = None, *, channel: socket.socket | None = None
    ) -> None:
        assert (master_fd is None) != (channel is None)
        self._channel = None if channel is None else trio.socket.from_stdlib_socket(channel)
        self._opening = trio.Lock()
        self._fd = master_fd
        self._stream = None if master_fd is None else trio.lowlevel.FdStream(master_fd)
        self._size: tuple[int, int] | None = None
        """A resize that came before the master."""
        self._closed = False

    async def _master(self) -> trio.lowlevel.FdStream | None:
        """The master's stream, once the job sent it; None if it never will."""
        if self._channel is not None:
            async with self._opening:
                channel = self._channel
                if channel is not None:
                    try:
                        self._fd = await _receive_master(channel)
                    except (OSError, trio.ClosedResourceError):
                        # Closed by ``aclose``, or reset: the job's side ended
                        # before it read the window size.
                        self._fd = None
                    finally:
                        self._channel = None
                        channel.close()
                    if self._fd is not None and self._closed:
                        os.close(self._fd)  # ``aclose`` came while it was on its way
                        self._fd = None
                    if self._fd is not None:
                        self._stream = trio.lowlevel.FdStream(self._fd)
                        if self._size is not None:
                            set_window_size(self._fd, *self._size)
        return self._stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        stream = await self._master()
        if stream is None:
            return b""
        try:
            return await stream.receive_some(max_bytes)
        except trio.BrokenResourceError as error:
            cause = error.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EIO:
                return b""
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        stream = await self._master()
        if stream is None:
            raise trio.BrokenResourceError("the job ended without a terminal")
        await stream.send_all(data)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size (TIOCSWINSZ); the kernel sends SIGWINCH to the
        terminal's foreground process group. Never blocks: before a contained
        job's master came, the size is set when it comes."""
        if self._fd is None:
            self._size = (rows, cols)
        else:
            set_window_size(self._fd, rows, cols)

    async def aclose(self) -> None:
        self._closed = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._stream is not None:
            await self._stream.aclose()
        else:
            await trio.lowlevel.checkpoint()


async def _receive_master(channel: trio.socket.SocketType) -> int | None:
    """The terminal master a contained job's ``rund-init`` sends (one packet
    with one fd, received close-on-exec); None at end of file. Packets
    without an fd are skipped; extra fds are closed."""
    while True:
        data, ancdata, _, _ = await channel.recvmsg(
            64, socket.CMSG_SPACE(FD_SIZE * _MAX_FDS), socket.MSG_CMSG_CLOEXEC
        )
        fds = received_fds(ancdata)
        if fds:
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]
        if not data:
            return None  # end of file (the job's side sends no empty packet)


_MAX_FDS = 4


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _winsize(rows, cols))


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


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
    """The job's ends of its stdio, to put in its ``ProcessSpec``
    (``terminal``: a pty's slave, or a contained job's terminal socket)."""

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


def open_stdio(
    stdin: bool, terminal: Terminal | None, *, own_devpts: bool = False
) -> tuple[JobStdio | None, ChildEnds]:
    """The pipe or pseudo-terminal a job's stdio needs, both ends close-on-exec;
    (None, no ends) for a job with neither (its stdin is /dev/null).

    With ``own_devpts`` (a contained job, whose /dev/pts is its own) the
    terminal is made inside the job: its end is a socket whose first packet
    is the window size, over which the master comes back (``TerminalMaster``)."""
    if terminal is not None and own_devpts:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.send(_winsize(terminal.rows, terminal.cols))
        except BaseException:
            ours.close()
            theirs.close()
            raise
        return JobStdio(
            stdin_pipe=None, terminal=TerminalMaster(channel=ours), feedable=stdin
        ), ChildEnds(terminal=theirs.detach())
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

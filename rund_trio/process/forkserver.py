"""Spawning jobs through a fork server: the ``execute`` helper without an
interpreter start per job.

``ForkServerSpawner`` starts one long-lived server process on first use
(``rund_trio.isolation.forkserver_main``: ``python -I -S`` with the helper's
modules imported, in its own session) and talks to it over a
``SOCK_SEQPACKET`` socket pair. Per job it sends the job's stdin, stdout and
stderr, the spec (a memfd, as for the helper) and the status pipe's write end
(``SCM_RIGHTS``); the server forks a child with ``CLONE_PARENT``, so the job's
process is the *daemon's* child, and replies with its pid. The daemon opens a
pidfd for it at once (the pid is pinned until the daemon reaps it) and from
there on everything is as with ``HelperSpawner``: the status pipe reads end of
file once the job's program was executed, or a status line that becomes a
``SpawnError``; the returned ``HelperProcess`` leads its own session, is waited
for through its pidfd and reaped with ``wait4``.

One request is in flight at a time (a ``trio.Lock``); the round trip is
shielded from cancellation, so a pid the server sent is never lost: a
cancelled spawn kills and reaps what it started. A server found dead is reaped
and replaced by the next spawn.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace

import trio

import rund_trio
from rund_trio.errors import SpawnError
from rund_trio.isolation import trace
from rund_trio.isolation.forkserver_main import (
    CHILD_PID,
    REPLY_MAX,
    REPLY_PID,
    REQUEST_SPAWN,
    REQUEST_SPAWN_IN_CGROUP,
    SERVER_FD,
)
from rund_trio.isolation.spec import Isolation, IsolationSpec
from rund_trio.process.base import ProcessSpec
from rund_trio.process.helper import (
    HelperProcess,
    job_isolation,
    program_pid_line,
    read_status,
    spawn_error,
)
from rund_trio.process.pidfd import ChildWaiter
from rund_trio.process.pipes import open_output_pipe

REPLY_TIMEOUT = 10.0
"""Seconds a fork may take before the server is deemed stuck and killed."""
STOP_TIMEOUT = 2.0
"""Seconds the server gets to exit on end of file before SIGKILL."""

_BOOTSTRAP = """\
import sys
try:
    sys.path.insert(0, {root!r})
    from rund_trio.isolation.forkserver_main import main
except BaseException as error:
    sys.stderr.write("rund-forkserver: cannot start: %r\\n" % (error,))
    sys.exit(1)
sys.exit(main())
"""


def forkserver_command() -> list[str]:
    """The fork server's argv: the daemon's own interpreter, isolated and
    without ``site`` (like the helper's), importing ``rund_trio`` from where
    the daemon found it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(rund_trio.__file__)))
    return [sys.executable, "-I", "-S", "-X", "utf8", "-c", _BOOTSTRAP.format(root=root)]


class ForkServerDied(Exception):
    """The server went away during a request. ``unread``: it surely never
    read the request (it ended with the request still in its socket's queue,
    which the kernel reports as ECONNRESET rather than end of file)."""

    def __init__(self, message: str, *, unread: bool) -> None:
        super().__init__(message)
        self.unread = unread


class _Unanswered(Exception):
    """The server read a request and died without answering it."""


def _child_pid(status: bytes) -> int | None:
    """The pid a job's process reported as its status pipe's first line."""
    line, newline, _ = status.partition(b"\n")
    if not newline or not line.startswith(CHILD_PID):
        return None
    try:
        return int(line[len(CHILD_PID) :])
    except ValueError:
        return None


def _without_pid_line(status: bytes) -> bytes:
    """The status the ``execute`` helper wrote, after the child's pid line."""
    return status.partition(b"\n")[2] if _child_pid(status) is not None else status


class ForkServer:
    """One running fork server: its process (the daemon's child) and the
    daemon's end of its socket."""

    def __init__(self, pid: int, sock: trio.socket.SocketType) -> None:
        self._waiter = ChildWaiter(pid)
        self._sock = sock

    @classmethod
    def start(cls, command: Sequence[str]) -> ForkServer:
        """posix_spawn the server: a new session, stdin and stdout /dev/null,
        stderr the daemon's (for its last words), its socket end on fd 3.

        Call it from the daemon's main thread: the jobs' parent (through
        ``CLONE_PARENT``) is the thread that spawned the server, and their
        parent death signal fires when that thread ends."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            traced = os.environ.get(trace.ENV)
            pid = os.posix_spawn(
                command[0],
                list(command),
                {} if not traced else {trace.ENV: traced},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), SERVER_FD),
                ],
                setsid=True,
                setsigmask=(),
            )
        except OSError as error:
            ours.close()
            code = error.errno or errno.EINVAL
            raise SpawnError(
                command[0], code, f"forkserver: {errno.errorcode.get(code, code)}"
            ) from None
        finally:
            theirs.close()
            os.close(devnull)
        return cls(pid, trio.socket.from_stdlib_socket(ours))

    @property
    def pid(self) -> int:
        return self._waiter.pid

    def alive(self) -> bool:
        """Whether the server has not ended (it may still be a zombie to reap)."""
        if self._waiter.status is not None:
            return False
        try:
            ended = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return ended is None

    async def send(self, request: bytes, fds: Sequence[int]) -> None:
        """Send a request; ``ForkServerDied`` if the server is gone (it then
        surely never saw the request)."""
        try:
            await self._sock.sendmsg(
                [request],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ForkServerDied(str(error), unread=True) from None

    async def receive(self) -> bytes:
        """The reply to the request sent; ``ForkServerDied`` at end of file."""
        try:
            reply: bytes = await self._sock.recv(REPLY_MAX)
        except ConnectionResetError as error:
            raise ForkServerDied(str(error), unread=True) from None
        if not reply:
            raise ForkServerDied("end of file", unread=False)
        return reply

    async def aclose(self, *, kill: bool = False) -> None:
        """Close the socket (the server exits at end of file), SIGKILL it if
        ``kill`` or if it takes longer than ``STOP_TIMEOUT``; reap it."""
        self._sock.close()
        with trio.CancelScope(shield=True):
            if not kill:
                with trio.move_on_after(STOP_TIMEOUT):
                    await self._waiter.wait()
            if self._waiter.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self._waiter.wait()


def spec_payload(spec: ProcessSpec, default: Isolation) -> tuple[bytes, Isolation]:
    """The spec fd's bytes for ``spec`` (isolation ``spec.isolation`` or
    ``default``, the job's host name), as ``HelperSpawner`` sends them but
    without ``cgroup_dir``: the fork server puts the process in its cgroup.
    Raises ``InvalidRequest`` for a spec the helper cannot apply."""
    iso = job_isolation(spec, default)
    IsolationSpec(spec.argv, spec.env, spec.cwd, iso).validate()
    payload = IsolationSpec(spec.argv, spec.env, spec.cwd, replace(iso, cgroup_dir=None))
    return payload.to_bytes(), iso


def _open_cgroup(program: str, cgroup_dir: str) -> int:
    """The job's cgroup directory as an fd for ``CLONE_INTO_CGROUP``; a
    ``SpawnError`` naming the ``cgroup`` step, as the helper's, if missing."""
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        code = error.errno or errno.EINVAL
        name = errno.errorcode.get(code, f"errno {code}")
        raise SpawnError(
            program, code, f"cgroup: {name} ({os.strerror(code)}: {cgroup_dir!r})"
        ) from None


def _spec_memfd(payload: bytes) -> int:
    fd = os.memfd_create("rund-spec", os.MFD_CLOEXEC)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _adopt(pid: int, stdout_r: int, stderr_r: int, *, has_init: bool) -> HelperProcess:
    """The ``HelperProcess`` for a job process the server just forked; if
    that fails (no fd for its pidfd), the process is killed and reaped."""
    try:
        return HelperProcess(pid, stdout_r, stderr_r, has_init=has_init)
    except BaseException:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # SIGKILLed: at once
        raise


class ForkServerSpawner:
    """Starts jobs like ``HelperSpawner`` (same isolation, same errors, same
    ``HelperProcess``), forked from a long-lived fork server.

    Call ``aclose`` when done (the server also exits by itself when the
    daemon's end of its socket closes, e.g. when the daemon dies).
    """

    def __init__(
        self,
        isolation: Isolation | None = None,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        self._isolation = Isolation() if isolation is None else isolation
        self._isolation.validate()
        trace.enable_from_environment()
        self._command = list(forkserver_command() if command is None else command)
        self._server: ForkServer | None = None
        self._lock = trio.Lock()
        self._closed = False

    @property
    def server_pid(self) -> int | None:
        """The running fork server's pid, if one was started."""
        return None if self._server is None else self._server.pid

    async def spawn(self, spec: ProcessSpec) -> HelperProcess:
        """Start ``spec`` contained by ``spec.isolation`` (default: the
        spawner's), inside ``spec.cgroup_dir`` when set; return once its
        program runs.

        Raises ``InvalidRequest`` for a spec the helper cannot apply and
        ``SpawnError`` when the job could not be set up or executed (errno and
        the failed step in ``reason``, e.g. ``exec: ENOENT (...)``) or the
        fork server failed; no process is left behind then.
        """
        program = spec.argv[0]
        for _ in range(2):
            process = await self._spawn_once(spec)
            if process is not None:
                return process
        raise SpawnError(program, errno.EPIPE, "forkserver: died twice before forking the job")

    async def _spawn_once(self, spec: ProcessSpec) -> HelperProcess | None:
        """``spawn``, or None when the server died before forking the job
        (nothing was started: safe to try again)."""
        payload, iso = spec_payload(spec, self._isolation)
        program = spec.argv[0]
        read_ends: list[int] = []
        to_close: list[int] = []
        status: bytes | None = None
        try:
            to_close.append(_spec_memfd(payload))
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            read_ends.append(status_r)
            to_close.append(status_w)
            stdout_r, stdout_w = open_output_pipe()
            read_ends.append(stdout_r)
            to_close.append(stdout_w)
            stderr_r, stderr_w = open_output_pipe()
            read_ends.append(stderr_r)
            to_close.append(stderr_w)
            stdin = spec.terminal_fd if spec.terminal_fd is not None else spec.stdin_fd
            if stdin is None:
                stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                to_close.append(stdin)
            out = (stdout_w, stderr_w) if spec.terminal_fd is None else (stdin, stdin)
            fds = [stdin, *out, to_close[0], status_w]
            request = REQUEST_SPAWN
            if iso.cgroup_dir is not None:
                fds.append(_open_cgroup(program, iso.cgroup_dir))
                to_close.append(fds[-1])
                request = REQUEST_SPAWN_IN_CGROUP
            trace.mark("daemon fs-lock")
            async with self._lock:
                trace.mark("daemon fs-locked")
                # From the request on, the pid must reach a HelperProcess
                # (whose pidfd and cleanup own it) whatever happens outside.
                with trio.CancelScope(shield=True):
                    try:
                        pid = await self._fork(program, request, fds)
                    except _Unanswered:
                        # The server died after reading the request. A child it
                        # made says its own pid first on the status pipe, which
                        # ends once the child ran its program or failed, or at
                        # once if there is no child (our copy closed here).
                        to_close.remove(status_w)
                        os.close(status_w)
                        status = b""
                        with trio.move_on_after(REPLY_TIMEOUT):
                            status = await read_status(status_r)
                        read_ends.remove(status_r)  # read_status closed it
                        child = _child_pid(status)
                        if child is None:
                            for fd in read_ends:
                                os.close(fd)
                            return None
                        pid = child
                    trace.mark("daemon fs-replied")
                    process = _adopt(pid, stdout_r, stderr_r, has_init=iso.namespaces.pid)
                    read_ends.remove(stdout_r)
                    read_ends.remove(stderr_r)
        except BaseException:
            for fd in read_ends:
                os.close(fd)
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        try:
            if status is None:
                status = await read_status(status_r)
        except BaseException:
            with trio.CancelScope(shield=True):
                # The process may not lead its session yet (a group signal
                # would miss it): kill it first, so it can fork nothing more,
                # then the group it may have made (its zombie pins the id).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.signal_tree(signal.SIGKILL)
                await process.wait()
                await process.aclose()
            raise
        trace.mark("daemon status-eof")
        program_pid, status = program_pid_line(_without_pid_line(status))
        if status:
            with trio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
            raise spawn_error(program, status)
        process.set_program_pid(program_pid)
        return process

    async def _fork(self, program: str, request: bytes, fds: Sequence[int]) -> int:
        """One request to the server (started, or replaced if found dead);
        the job process's pid. Holds the lock; shielded by the caller."""
        if self._closed:
            raise SpawnError(program, errno.ESHUTDOWN, "forkserver: the spawner is closed")
        for attempt in (1, 2):
            server = await self._running_server()
            reply = b""
            try:
                await server.send(request, fds)
                with trio.move_on_after(REPLY_TIMEOUT):
                    reply = await server.receive()
                break
            except ForkServerDied as error:
                await self._discard(server)
                # Dead before it read the request: nothing was forked, so one
                # more try with a new server. Otherwise it may have forked the
                # job before dying: the caller asks the job itself.
                if not error.unread:
                    raise _Unanswered from None
                if attempt == 2:
                    raise SpawnError(program, errno.EPIPE, f"forkserver: died ({error})") from None
        if not reply:
            await self._discard(server, kill=True)
            raise SpawnError(program, errno.ETIMEDOUT, "forkserver: no reply")
        if reply.startswith(REPLY_PID):
            try:
                return int(reply[len(REPLY_PID) :])
            except ValueError:
                pass
            await self._discard(server, kill=True)
            raise SpawnError(program, errno.EPROTO, f"forkserver: bad reply {reply[:40]!r}")
        raise spawn_error(program, reply)

    async def _running_server(self) -> ForkServer:
        server = self._server
        if server is not None and not server.alive():
            await self._discard(server)
            server = None
        if server is None:
            server = self._server = ForkServer.start(self._command)
        return server

    async def _discard(self, server: ForkServer, *, kill: bool = False) -> None:
        if self._server is server:
            self._server = None
        await server.aclose(kill=kill)

    async def aclose(self) -> None:
        """Stop the fork server (jobs already started are not affected: they
        are the daemon's children). Later spawns raise ``SpawnError``."""
        self._closed = True
        async with self._lock:
            if self._server is not None:
                await self._discard(self._server)

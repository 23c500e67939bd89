"""Driving a real rund-trio daemon in the kernel tier, as a client would.

Two ways: ``start_kernel_daemon`` serves in the test's own nursery (fast: no
interpreter start-up under emulation) on a cgroup subtree of its own;
``DaemonProcess`` runs ``python -m rund_trio serve`` as a subprocess, for what
needs a daemon that can be SIGKILLed. Either way the tests talk to it with
``RundClient`` over mutual TLS on loopback, and look at the kernel's side
(cgroupfs, /proc) only to check what the daemon did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing
from pathlib import Path

import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.cgroups.tree import CgroupOptions
from rund_trio.client.api import RundClient
from tests.conftest import Daemon, Pki, start_daemon

SLOW = 120.0
"""Seconds: a generous bound for anything under emulation (no KVM)."""


async def start_kernel_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, options: CgroupOptions, **overrides: object
) -> Daemon:
    """A daemon served in ``nursery`` with the cgroup ``options``; cancelled
    (every job killed, every leaf removed) when the nursery ends."""
    return await start_daemon(nursery, pki, tmp_path, cgroups=options, **overrides)


def start_request(*argv: str, **limits: int) -> pb.JobStartRequest:
    """A Start request for ``argv`` with limits by their wire names
    (``max_memory_usage=20 << 20``, ``max_cpu_bandwidth=20000``, ...)."""
    request = pb.JobStartRequest(name=argv[0], args=argv[1:])
    for name, value in limits.items():
        getattr(request, name).value = value
    return request


async def read_output_until(rund: RundClient, job_id: str, marker: bytes, count: int = 1) -> bytes:
    """The job's stdout from the start until ``marker`` appeared ``count`` times."""
    data = b""
    async with aclosing(rund.log(job_id)) as chunks:
        async for chunk in chunks:
            data += chunk.stdout
            if data.count(marker) >= count:
                return data
    raise AssertionError(f"the job's output ended before {count} x {marker!r}: {data!r}")


async def wait_job_done(rund: RundClient, job_id: str) -> tuple[bytes, bytes, pb.JobStatus]:
    """Follow the job's log to its end: the daemon ends it once the job ended,
    its tree is dead and its cgroup removed. Its stdout, stderr and final status."""
    out, err = b"", b""
    async with aclosing(rund.log(job_id)) as chunks:
        async for chunk in chunks:
            out += chunk.stdout
            err += chunk.stderr
    return out, err, await rund.status(job_id)


def seconds(duration: object) -> float:
    """A protobuf Duration or Timestamp in seconds."""
    return duration.seconds + duration.nanos / 1e9  # type: ignore[attr-defined]


def cpu_seconds(status: pb.JobStatus) -> float:
    return seconds(status.user_time) + seconds(status.system_time)


def cgroup_pids(leaf: Path) -> list[int]:
    """The (host) pids in ``leaf`` and below it."""
    pids: list[int] = []
    for sub, _dirs, files in os.walk(leaf):
        if "cgroup.procs" in files:
            pids.extend(int(p) for p in Path(sub, "cgroup.procs").read_text().split())
    return pids


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie runs nothing)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def job_leaves(root: Path) -> list[str]:
    """Names of the job leaves (ULIDs) under a daemon's cgroup subtree."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and len(p.name) == 26)


# ------------------------------------------------------- a daemon subprocess
#
# A daemon process that a test can SIGKILL. ``python -m rund_trio serve`` would
# pay for a fresh interpreter importing trio, purerpc, protobuf and
# cryptography: over a minute under emulation. So a fork server, forked from the
# test process before any trio run (rund_trio already imported), forks each
# daemon on request; the daemon child runs the CLI's own entry point,
# ``rund_trio.cli.main.main(["serve", ...])``, with stderr on a pipe of the
# test's. Set RUND_KERNEL_EXEC_DAEMON=1 to exec ``python -m rund_trio serve``
# instead.

_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class ForkServer:
    """A child process that forks daemons on request (see above)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the fork server: never returns into pytest
            code = 1
            try:
                ours.close()
                code = _fork_server(theirs)
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._sock = ours

    def _ask(self, request: dict[str, object], fds: list[int] | None = None) -> dict[str, int]:
        socket.send_fds(self._sock, [json.dumps(request).encode()], fds or [])
        reply: dict[str, int] = json.loads(self._sock.recv(4096))
        return reply

    def serve(self, argv: list[str], stderr_fd: int) -> int:
        """Fork a daemon running ``rund-trio <argv>``; its pid."""
        return self._ask({"op": "serve", "argv": argv}, [stderr_fd])["pid"]

    def reap(self, pid: int) -> int:
        """Reap the daemon ``pid`` (it has exited); its return code, -N for signal N."""
        return self._ask({"op": "reap", "pid": pid})["returncode"]

    def close(self) -> None:
        self._sock.close()  # the server sees end of file and exits
        os.waitpid(self.pid, 0)


def _fork_server(sock: socket.socket) -> int:
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4)
        if not message:
            return 0
        request = json.loads(message)
        if request["op"] == "serve":
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    sock.close()
                    code = _daemon_child(request["argv"], fds[0])
                finally:
                    os._exit(code)
            os.close(fds[0])
            sock.send(json.dumps({"pid": pid}).encode())
        elif request["op"] == "reap":
            _pid, wait_status = os.waitpid(request["pid"], 0)
            returncode = os.waitstatus_to_exitcode(wait_status)
            sock.send(json.dumps({"returncode": returncode}).encode())


def _daemon_child(argv: list[str], stderr_fd: int) -> int:
    import logging

    from rund_trio.cli.main import main

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(stderr_fd, 2)
    os.close(devnull)
    os.close(stderr_fd)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    logging.root.handlers.clear()  # pytest's capture handlers: basicConfig adds stderr's
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


class DaemonProcess:
    """A daemon subprocess on 127.0.0.1, its stderr collected."""

    def __init__(self, pid: int, port: int, pki: Pki, stderr: bytearray, reap: object) -> None:
        self.pid = pid
        self.port = port
        self.pki = pki
        self.stderr = stderr
        self._reap = reap
        self.returncode: int | None = None

    def client(self, name: str = "alice") -> AbstractAsyncContextManager[RundClient]:
        tls = self.pki.client_tls(name)
        return RundClient.connect(f"localhost:{self.port}", tls.client_context())

    def log_text(self) -> str:
        return self.stderr.decode(errors="replace")

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    async def wait(self) -> int:
        if self.returncode is None:
            self.returncode = await self._reap()  # type: ignore[operator]
        return self.returncode


@contextlib.asynccontextmanager
async def daemon_process(
    fork_server: ForkServer | None, pki: Pki, cgroup_root: Path, state_dir: Path, *extra: str
) -> AsyncIterator[DaemonProcess]:
    """Run a daemon subprocess until the block ends (then SIGKILL it if it is
    still running). Yields once it accepts connections: its "listening on"
    log line comes after its cgroup subtree was set up and cleaned."""
    tls = pki.server_tls()
    argv = [
        "serve",
        "--addr=127.0.0.1:0",
        f"--ca={tls.ca}",
        f"--cert={tls.cert}",
        f"--key={tls.key}",
        f"--cgroup-root={cgroup_root}",
        f"--state-dir={state_dir}",
        *extra,
    ]
    reap: object
    if fork_server is None or os.environ.get("RUND_KERNEL_EXEC_DAEMON") == "1":
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rund_trio", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        stderr_stream: trio.abc.ReceiveStream = process.stderr
        pid = process.pid
        reap = process.wait
    else:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            pid = fork_server.serve(argv, write_end)
        finally:
            os.close(write_end)
        stderr_stream = trio.lowlevel.FdStream(read_end)
        pidfd = os.pidfd_open(pid)

        async def reap() -> int:
            await trio.lowlevel.wait_readable(pidfd)
            os.close(pidfd)
            return fork_server.reap(pid)

    stderr = bytearray()
    started = trio.Event()
    port: list[int] = []

    async def collect_stderr() -> None:
        while chunk := await stderr_stream.receive_some():
            stderr.extend(chunk)
            if not port and (match := _LISTENING.search(stderr)):
                port.append(int(match.group(1)))
                started.set()
        started.set()  # end of file: the daemon died before listening

    daemon = DaemonProcess(pid, 0, pki, stderr, reap)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_stderr)
            with trio.fail_after(SLOW):
                await started.wait()
            if not port:
                code = await daemon.wait()
                raise AssertionError(
                    f"the daemon exited ({code}) before listening:\n" + daemon.log_text()
                )
            daemon.port = port[0]
            try:
                yield daemon
            except BaseException:
                # Shown with the failure (pytest captures it): what the daemon logged.
                print("--- the daemon's log ---\n" + daemon.log_text(), file=sys.stderr)
                raise
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if daemon.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    daemon.send_signal(signal.SIGKILL)
                await daemon.wait()
            await stderr_stream.aclose()

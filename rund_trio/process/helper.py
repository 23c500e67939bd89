"""Spawning a job through the ``rund-trio execute`` helper: namespaces, a root
filesystem, credentials and the job's cgroup (``rund_trio.isolation``).

``HelperSpawner.spawn`` posix_spawns the helper (``sys.executable -I -S``, a
new session, stdin /dev/null, stdout/stderr the job's pipes, the spec on fd 3
in a memfd, the status pipe on fd 4) and returns once the status pipe reads
end of file, i.e. once the job's program was executed; a status line instead
becomes a ``SpawnError`` after the helper was reaped.

The returned process's ``pid`` is the helper's, which is the job's program
itself without a PID namespace (the helper execs it) and otherwise the parent of
the namespace's init; either way it ends the way the job's program ended, it is
the session leader, and its process group holds the job's processes. Its
``program_pid`` is the job's program's, which the helper reports on the status
fd when a PID namespace stands in between.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

import trio

import rund_trio
from rund_trio.errors import SpawnError
from rund_trio.isolation import wire
from rund_trio.isolation.spec import Isolation, IsolationSpec, hostname_for_job
from rund_trio.process.base import ProcessSpec, ResourceUsage
from rund_trio.process.pipes import move_above, open_output_pipe
from rund_trio.process.session import SessionLeader

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = resource.getpagesize()
_FIRST_FREE_FD = 5  # 0-2 stdio, 3 spec, 4 status

_BOOTSTRAP = """\
import sys
try:
    sys.path.insert(0, {root!r})
    from rund_trio.isolation.execute import main
except BaseException as error:
    import os
    os.write({status_fd}, b"22 helper-import " + repr(error).encode() + b"\\n")
    sys.exit({exit_code})
sys.exit(main())
"""


def helper_command() -> list[str]:
    """The helper's argv: the daemon's own interpreter, isolated from the
    environment (``-I``), without ``site`` (``-S``: the helper needs no
    third-party package, and skipping site-packages saves milliseconds), in
    UTF-8 mode, importing ``rund_trio`` from where the daemon found it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(rund_trio.__file__)))
    code = _BOOTSTRAP.format(
        root=root, status_fd=wire.DEFAULT_STATUS_FD, exit_code=wire.EXIT_SETUP_FAILED
    )
    return [sys.executable, "-I", "-S", "-X", "utf8", "-c", code]


def cli_helper_command() -> list[str]:
    """The same helper through the CLI (``rund-trio execute``): slower to
    start (site, argparse), for debugging."""
    return [sys.executable, "-m", "rund_trio", "execute"]


def program_pid_line(status: bytes) -> tuple[int | None, bytes]:
    """(the job's program's pid from the helper's ``wire.PROGRAM_PID`` line,
    if it wrote one; the rest of the status: empty once the program runs).
    The line may come before or after a failure line: the helper and the
    job's process write them independently."""
    pid = None
    rest = []
    for line in status.splitlines(keepends=True):
        number = line[len(wire.PROGRAM_PID) :].strip()
        if pid is None and line.startswith(wire.PROGRAM_PID) and number.isdigit():
            pid = int(number)
        else:
            rest.append(line)
    return pid, b"".join(rest)


def spawn_error(program: str, status: bytes) -> SpawnError:
    """The ``SpawnError`` for a status line from the helper."""
    code, step, message = wire.decode_status(status)
    name = errno.errorcode.get(code, f"errno {code}")
    return SpawnError(program, code, f"{step}: {name} ({message})")


class HelperProcess(SessionLeader):
    """A job started through the helper. Its process group holds the helper
    (and ``rund-init``), which ignore everything but SIGKILL, and the job's
    processes; SIGKILL of the group ends a PID namespace with its init."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int, *, has_init: bool) -> None:
        super().__init__(pid, stdout_fd, stderr_fd)
        self._has_init = has_init
        self._memory_peak = 0

    def usage(self) -> ResourceUsage:
        """CPU and resident memory of the session's processes from /proc (one
        scan of /proc); the helper's and ``rund-init``'s own memory and CPU are
        left out, what they reaped is counted. ``memory_peak`` is the highest
        total seen by these calls. Processes that left the session (setsid) are
        not seen: the job's cgroup is the accurate source."""
        if self.reaped:
            return ResourceUsage()
        usage = session_usage(self.pid, helpers=1 if not self._has_init else 2)
        self._memory_peak = max(self._memory_peak, usage.memory_current)
        return ResourceUsage(
            user_time=usage.user_time,
            system_time=usage.system_time,
            memory_current=usage.memory_current,
            memory_peak=self._memory_peak,
        )


def session_usage(sid: int, *, helpers: int) -> ResourceUsage:
    """Sum over the processes of session ``sid``. With ``helpers=2`` the
    leader and its children (the helper and ``rund-init``) count only for what
    they reaped; with ``helpers=1`` the leader is the job's program itself."""
    user = system = rss = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return ResourceUsage()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[3]) != sid:
            continue
        pid, ppid = int(name), int(fields[1])
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        user += cutime
        system += cstime
        if helpers == 2 and (pid == sid or ppid == sid):
            continue
        user += utime
        system += stime
        rss += int(fields[21])
    return ResourceUsage(
        user_time=user / _CLOCK_TICKS,
        system_time=system / _CLOCK_TICKS,
        memory_current=rss * _PAGE_SIZE,
    )


def job_isolation(spec: ProcessSpec, default: Isolation) -> Isolation:
    """The containment of ``spec``'s job: ``spec.isolation`` (else
    ``default``), with the job's host name in a UTS namespace and its cgroup."""
    iso = default if spec.isolation is None else spec.isolation
    if iso.namespaces.uts and iso.hostname is None and spec.job_id:
        iso = replace(iso, hostname=hostname_for_job(spec.job_id))
    if spec.cgroup_dir is not None:
        iso = replace(iso, cgroup_dir=spec.cgroup_dir)
    return iso


class HelperSpawner:
    """Starts jobs through the ``execute`` helper with ``isolation`` (per
    spawn, or the spawner's default: new PID, mount, UTS and IPC namespaces,
    host network)."""

    def __init__(
        self,
        isolation: Isolation | None = None,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        self._isolation = Isolation() if isolation is None else isolation
        self._isolation.validate()
        self._command = list(helper_command() if command is None else command)

    async def spawn(self, spec: ProcessSpec) -> HelperProcess:
        """Start ``spec`` contained by ``spec.isolation`` (default: the
        spawner's), inside ``spec.cgroup_dir`` when set.

        Raises ``InvalidRequest`` for a spec the helper cannot apply and
        ``SpawnError`` when the helper failed to set up or execute the job
        (errno and the failed step in ``reason``, e.g. ``exec: ENOENT (...)``);
        no process is left behind then.
        """
        iso = job_isolation(spec, self._isolation)
        payload = IsolationSpec(spec.argv, spec.env, spec.cwd, iso).to_bytes()
        pid, stdout_r, stderr_r, status_r = self._start_helper(
            payload,
            spec.terminal_fd if spec.terminal_fd is not None else spec.stdin_fd,
            terminal=spec.terminal_fd is not None,
        )
        process = HelperProcess(pid, stdout_r, stderr_r, has_init=iso.namespaces.pid)
        try:
            status = await read_status(status_r)
        except BaseException:
            with trio.CancelScope(shield=True):
                process.signal_tree(signal.SIGKILL)
                await process.wait()
                await process.aclose()
            raise
        program_pid, status = program_pid_line(status)
        if status:
            with trio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
            raise spawn_error(spec.argv[0], status)
        process.set_program_pid(program_pid)
        return process

    def _start_helper(
        self, payload: bytes, stdin: int | None, *, terminal: bool
    ) -> tuple[int, int, int, int]:
        """posix_spawn the helper with ``stdin`` (None: /dev/null; with
        ``terminal`` also its stdout and stderr); (pid, stdout, stderr, status)
        read ends."""
        spec_fd = os.memfd_create("rund-spec", os.MFD_CLOEXEC)
        to_close = [spec_fd]
        read_ends: list[int] = []
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(spec_fd, view) :]
            os.lseek(spec_fd, 0, os.SEEK_SET)
            for _ in range(3):
                if not read_ends:
                    read_end, write_end = os.pipe2(os.O_CLOEXEC)  # status
                else:
                    read_end, write_end = open_output_pipe()
                read_ends.append(read_end)
                to_close.append(write_end)
            if stdin is None:
                to_close.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            else:
                to_close.append(fcntl.fcntl(stdin, fcntl.F_DUPFD_CLOEXEC, _FIRST_FREE_FD))
            to_close = [move_above(fd, _FIRST_FREE_FD) for fd in to_close]
            spec_fd, status_w, stdout_w, stderr_w, job_stdin = to_close
            if terminal:
                stdout_w = stderr_w = job_stdin
            try:
                pid = os.posix_spawn(
                    self._command[0],
                    self._command,
                    {},
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, job_stdin, 0),
                        (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                        (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                        (os.POSIX_SPAWN_DUP2, spec_fd, wire.DEFAULT_SPEC_FD),
                        (os.POSIX_SPAWN_DUP2, status_w, wire.DEFAULT_STATUS_FD),
                    ],
                    setsid=True,
                    setsigmask=(),
                )
            except OSError as error:
                code = error.errno or errno.EINVAL
                raise SpawnError(
                    self._command[0], code, f"helper: {errno.errorcode.get(code, code)}"
                ) from None
        except BaseException:
            for fd in read_ends:
                os.close(fd)
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        status_r, stdout_r, stderr_r = read_ends
        return pid, stdout_r, stderr_r, status_r


async def read_status(status_fd: int) -> bytes:
    """Everything the helper wrote on the status fd, up to its end of file."""
    data = b""
    async with trio.lowlevel.FdStream(status_fd) as stream:
        while len(data) < wire.STATUS_MAX:
            chunk = await stream.receive_some(wire.STATUS_MAX)
            if not chunk:
                break
            data += chunk
    return data

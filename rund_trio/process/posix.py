"""Spawning a job's program directly with ``posix_spawn``: no isolation, no
cgroup, the whole tree in a new session whose process group is the job."""

from __future__ import annotations

import errno
import os
import resource
import signal

from rund_trio.errors import SpawnError, Unsupported
from rund_trio.isolation.spec import Isolation
from rund_trio.process.base import ProcessSpec, ResourceUsage
from rund_trio.process.path import resolve_program
from rund_trio.process.pipes import open_output_pipe
from rund_trio.process.session import SessionLeader

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = resource.getpagesize()


def read_proc_usage(pid: int) -> ResourceUsage:
    """CPU and memory of one live process from /proc; zero once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
        with open(f"/proc/{pid}/statm", "rb") as statm_file:
            statm = statm_file.read().split()
    except OSError:
        return ResourceUsage()
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ResourceUsage(
        user_time=(utime + cutime) / _CLOCK_TICKS,
        system_time=(stime + cstime) / _CLOCK_TICKS,
        memory_current=int(statm[1]) * _PAGE_SIZE,
    )


class PosixProcess(SessionLeader):
    """A job started by ``PosixSpawner``; its usage is its main process's."""

    def usage(self) -> ResourceUsage:
        return read_proc_usage(self.pid) if not self.reaped else ResourceUsage()


class PosixSpawner:
    """Starts programs with ``posix_spawn`` (vfork-fast; exec errors reported
    by the C library with their errno), looked up in the job's own PATH, with
    stdin from /dev/null (or ``stdin_fd``), stdout and stderr into fresh pipes, in a new session."""

    async def spawn(self, spec: ProcessSpec) -> PosixProcess:
        if spec.cwd is not None:
            raise Unsupported("this spawner cannot set a job's working directory")
        if spec.cgroup_dir is not None:
            raise Unsupported("this spawner cannot place a job in a cgroup before it runs")
        if spec.isolation is not None and spec.isolation != Isolation.none():
            raise Unsupported("this spawner cannot isolate a job")
        if spec.terminal_fd is not None:
            raise Unsupported("this spawner cannot give a job a terminal")
        stdout_r, stdout_w = open_output_pipe()
        stderr_r, stderr_w = open_output_pipe()
        devnull = (
            os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if spec.stdin_fd is None
            else os.dup(spec.stdin_fd)
        )
        try:
            program = resolve_program(spec.argv[0], spec.env.get("PATH", os.defpath))
            pid = os.posix_spawn(
                program,
                list(spec.argv),
                dict(spec.env),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                    (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                ],
                setsid=True,
                # Python ignores SIGPIPE and SIGXFSZ; a job must get the defaults.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as error:
            os.close(stdout_r)
            os.close(stderr_r)
            code = error.errno or errno.EINVAL
            raise SpawnError(spec.argv[0], code, os.strerror(code)) from None
        except SpawnError:
            os.close(stdout_r)
            os.close(stderr_r)
            raise
        finally:
            os.close(stdout_w)
            os.close(stderr_w)
            os.close(devnull)
        return PosixProcess(pid, stdout_r, stderr_r)

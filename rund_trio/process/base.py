"""The process layer's interface: what the supervisor needs from a job's process.

The supervisor only ever talks to a ``Spawner`` and the ``JobProcess`` it
returns, so tests drive it with a fake process (``tests/fakes.py``) and the real
implementations (plain ``posix_spawn`` now, the isolating ``rund-trio execute``
helper and cgroups later) plug in behind the same two protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from rund_trio.cgroups.limits import Limits
from rund_trio.isolation.spec import Isolation


@dataclass(frozen=True)
class ProcessSpec:
    """Everything needed to start one job's process.

    ``argv[0]`` is looked up in ``PATH`` (of ``env``) unless it contains a slash.
    No shell is involved.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    job_id: str = ""
    """The job's ULID: names its cgroup and its hostname."""
    limits: Limits = Limits()
    isolation: Isolation | None = None
    """Namespaces, root filesystem and credentials; None: the spawner's default."""
    cgroup_dir: str | None = None
    """A cgroup the process must be in before its program runs (set by
    ``CgroupSpawner`` for the spawner it wraps)."""
    stdin_fd: int | None = None
    """The fd the job's stdin is a copy of (a pipe's read end); None:
    /dev/null. The caller keeps it open until ``spawn`` returned."""
    terminal_fd: int | None = None
    """A pseudo-terminal's slave: the job's stdin, stdout and stderr and its
    session's controlling terminal (its output pipes then stay empty); it
    overrides ``stdin_fd``. The caller keeps it open until ``spawn`` returned.
    For a contained job, a unix socket instead, over which the job's
    ``rund-init`` sends the master of a terminal of the job's own devpts
    (``rund_trio.isolation.execute``); it is passed on exactly the same way."""


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: exactly one of ``exit_code`` and ``signal`` is set."""

    exit_code: int | None
    signal: int | None
    user_time: float = 0.0
    """CPU seconds in user mode, the process and its reaped descendants."""
    system_time: float = 0.0
    """CPU seconds in kernel mode, the process and its reaped descendants."""


@dataclass(frozen=True)
class ResourceUsage:
    """A job's resource use as far as the process layer can see it: the whole
    cgroup where the job has one, else its main process."""

    user_time: float = 0.0
    system_time: float = 0.0
    memory_current: int = 0
    memory_peak: int = 0
    oom_kills: int = 0
    cpu_throttled_periods: int = 0
    cpu_throttled_time: float = 0.0
    io_read_bytes: int = 0
    io_write_bytes: int = 0


class JobProcess(Protocol):
    """A started job process: its output streams, its end, and its tree.

    ``stdout`` and ``stderr`` are the read ends of the job's output pipes; they
    reach end of file once every process that held the write ends is gone.
    """

    @property
    def pid(self) -> int: ...

    @property
    def program_pid(self) -> int:
        """The job's program's pid on this host (Status's ``pid``): ``pid``
        unless a helper or a PID namespace's init stands in between."""
        ...

    @property
    def stdout(self) -> trio.abc.ReceiveStream: ...

    @property
    def stderr(self) -> trio.abc.ReceiveStream: ...

    async def wait(self) -> ExitStatus:
        """Wait until the main process has ended and been reaped.

        Cancellation is safe: nothing is lost, and a later call waits again or
        returns the same status at once once the process is reaped.
        """
        ...

    def signal_tree(self, signum: int) -> None:
        """Send ``signum`` to every process of the job (its process group, or
        its cgroup). Does nothing once the whole tree is gone. Never blocks."""
        ...

    def usage(self) -> ResourceUsage:
        """Current resource use; cheap and non-blocking."""
        ...

    async def aclose(self) -> None:
        """Release everything the process held (pipes, pidfds, cgroups).

        Call only after ``wait`` returned. Safe to call twice.
        """
        ...


class Spawner(Protocol):
    """Starts job processes."""

    async def spawn(self, spec: ProcessSpec) -> JobProcess:
        """Start ``spec`` and return once its program is running.

        Raises ``rund_trio.errors.SpawnError`` (with the OS reason) when the
        program cannot be executed; no process is left behind then.
        """
        ...

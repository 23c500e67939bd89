"""A job process that leads its own session: the common part of the spawners'
processes."""

from __future__ import annotations

import contextlib
import os
import signal

import trio

from rund_trio.process.base import ExitStatus
from rund_trio.process.pidfd import ChildWaiter


class SessionLeader:
    """A started job: the leader of a new session, whose process group holds
    the job's processes, with its output pipes' read ends.

    When the leader ends, what is left of its group is killed before the leader
    is reaped, while the zombie still pins the group id, so a signal can never
    reach a stranger that reused the id. Subclasses supply ``usage``.
    """

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int) -> None:
        self._waiter = ChildWaiter(pid)
        self._stdout = trio.lowlevel.FdStream(stdout_fd)
        self._stderr = trio.lowlevel.FdStream(stderr_fd)
        self._program_pid: int | None = None

    @property
    def pid(self) -> int:
        return self._waiter.pid

    @property
    def program_pid(self) -> int:
        """The job's program on this host: the leader itself unless a helper
        above a PID namespace said otherwise (``set_program_pid``)."""
        return self._program_pid if self._program_pid is not None else self.pid

    def set_program_pid(self, pid: int | None) -> None:
        self._program_pid = pid

    @property
    def reaped(self) -> bool:
        return self._waiter.status is not None

    @property
    def stdout(self) -> trio.abc.ReceiveStream:
        return self._stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream:
        return self._stderr

    async def wait(self) -> ExitStatus:
        return await self._waiter.wait(before_reap=lambda: self._kill_group(signal.SIGKILL))

    def _kill_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def signal_tree(self, signum: int) -> None:
        if not self.reaped:
            self._kill_group(signum)

    async def aclose(self) -> None:
        await self._stdout.aclose()
        await self._stderr.aclose()
        self._waiter.close()

"""Waiting for a child process through a pidfd: no threads, no polling, no
SIGCHLD handler. Shared by the spawners."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import trio

from rund_trio.process.base import ExitStatus


def exit_status_from_wait(wait_status: int, rusage: resource.struct_rusage) -> ExitStatus:
    """Translate ``wait4``'s status and resource usage."""
    if os.WIFSIGNALED(wait_status):
        exit_code, signum = None, os.WTERMSIG(wait_status)
    else:
        exit_code, signum = os.WEXITSTATUS(wait_status), None
    return ExitStatus(
        exit_code=exit_code,
        signal=signum,
        user_time=rusage.ru_utime,
        system_time=rusage.ru_stime,
    )


class ChildWaiter:
    """One unreaped child, watched through a pidfd and reaped with ``wait4``.

    Open it right after the child is started: an unreaped child's pid cannot be
    reused, so the pidfd surely refers to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = os.pidfd_open(pid)
        self._status: ExitStatus | None = None
        self._lock = trio.Lock()

    @property
    def status(self) -> ExitStatus | None:
        """How the child ended, once reaped."""
        return self._status

    async def wait(self, before_reap: Callable[[], None] | None = None) -> ExitStatus:
        """Wait for the child to end, call ``before_reap`` while it is still a
        zombie (its pid, process group and session ids are still pinned), then
        reap it. Cancellation-safe; concurrent callers get the same status."""
        async with self._lock:
            while self._status is None:
                assert self._pidfd is not None
                await trio.lowlevel.wait_readable(self._pidfd)
                if before_reap is not None:
                    before_reap()
                pid, wait_status, rusage = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self._status = exit_status_from_wait(wait_status, rusage)
                    self.close()
            return self._status

    def close(self) -> None:
        """Close the pidfd (the child is left unreaped if it was not yet)."""
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

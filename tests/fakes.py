"""A fake process layer: lets the supervisor be driven deterministically,
under trio's autojump clock, with no real processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from rund_trio.errors import SpawnError
from rund_trio.jobs.store import JobStore
from rund_trio.process.base import ExitStatus, ProcessSpec, ResourceUsage


class FakeProcess:
    """A process whose output and end the test controls.

    By default SIGTERM and SIGKILL end it with that signal; ``ignores_sigterm``
    makes it survive SIGTERM. ``signals`` records (signal, trio time) pairs.
    """

    def __init__(self, pid: int, spec: ProcessSpec, *, ignores_sigterm: bool = False) -> None:
        self.pid = pid
        self.program_pid = pid
        self.spec = spec
        self.ignores_sigterm = ignores_sigterm
        self.signals: list[tuple[int, float]] = []
        self.closed = False
        self._stdout_send, self._stdout = trio.testing.memory_stream_one_way_pair()
        self._stderr_send, self._stderr = trio.testing.memory_stream_one_way_pair()
        self._status: ExitStatus | None = None
        self._ended = trio.Event()
        self.tree_alive = True
        self.memory = 4096
        self.stdin_fd = None if spec.stdin_fd is None else os.dup(spec.stdin_fd)
        """The job's end of its stdin pipe, kept as a process would (never read
        unless the test reads it); closed when the process ends."""

    @property
    def stdout(self) -> trio.abc.ReceiveStream:
        return self._stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream:
        return self._stderr

    async def write_stdout(self, data: bytes) -> None:
        await self._stdout_send.send_all(data)

    async def write_stderr(self, data: bytes) -> None:
        await self._stderr_send.send_all(data)

    async def close_output(self) -> None:
        await self._stdout_send.aclose()
        await self._stderr_send.aclose()

    def exit(self, code: int | None = 0, signum: int | None = None) -> None:
        """End the main process (its output stays open until close_output)."""
        if self._status is None:
            self._status = ExitStatus(
                exit_code=None if signum else code,
                signal=signum,
                user_time=0.5,
                system_time=0.25,
            )
            self._ended.set()
            self.close_stdin()

    def close_stdin(self) -> None:
        if self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None

    async def wait(self) -> ExitStatus:
        await self._ended.wait()
        assert self._status is not None
        return self._status

    def signal_tree(self, signum: int) -> None:
        if not self.tree_alive:
            return
        self.signals.append((signum, trio.current_time()))
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and not self.ignores_sigterm):
            self.exit(signum=signum)
            self.tree_alive = False
            # a killed tree closes its pipes
            self._stdout_send.close()
            self._stderr_send.close()

    def usage(self) -> ResourceUsage:
        return ResourceUsage(user_time=0.1, system_time=0.05, memory_current=self.memory)

    async def aclose(self) -> None:
        self.close_stdin()
        self.closed = True


@dataclass
class FakeSpawner:
    """Hands out FakeProcesses; ``fail_with`` makes the next spawn fail."""

    ignores_sigterm: bool = False
    fail_with: SpawnError | None = None
    processes: list[FakeProcess] = field(default_factory=list)
    spawned: trio.Event = field(default_factory=trio.Event)

    async def spawn(self, spec: ProcessSpec) -> FakeProcess:
        await trio.lowlevel.checkpoint()
        if self.fail_with is not None:
            raise self.fail_with
        process = FakeProcess(
            1000 + len(self.processes), spec, ignores_sigterm=self.ignores_sigterm
        )
        self.processes.append(process)
        return process


async def commit_inline(commit: Callable[[list[Any]], None], batch: list[Any]) -> None:
    """A ``JobStore`` offload that commits on the event loop: under the autojump
    clock a wait for a worker thread would let virtual time jump."""
    commit(batch)
    await trio.lowlevel.checkpoint()


def inline_store(state_dir: Path) -> JobStore:
    """The job database of ``state_dir``, committing inline (``commit_inline``)."""
    return JobStore.open(state_dir, offload=commit_inline)

"""Jobs in their own cgroup v2 leaf: limits enforced by the kernel, the whole
tree killed and accounted through the cgroup.

``CgroupSpawner`` wraps another spawner: it creates the job's leaf with its
limits applied, has the inner spawner start the process *inside* it (the
inner spawner joins the cgroup before the job's program runs, so no child can
escape), and returns a ``CgroupedProcess`` whose signals, usage and cleanup
go through the leaf.
"""

from __future__ import annotations

import signal
from dataclasses import replace

import trio

from rund_trio.cgroups.tree import CgroupTree, JobCgroup
from rund_trio.isolation import trace
from rund_trio.process.base import ExitStatus, JobProcess, ProcessSpec, ResourceUsage, Spawner
from rund_trio.process.posix import read_proc_usage


class CgroupedProcess:
    """A job process whose tree is its cgroup leaf."""

    def __init__(self, process: JobProcess, leaf: JobCgroup) -> None:
        self._process = process
        self._leaf = leaf
        self._memory_peak_seen = 0

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def program_pid(self) -> int:
        return self._process.program_pid

    @property
    def stdout(self) -> trio.abc.ReceiveStream:
        return self._process.stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream:
        return self._process.stderr

    async def wait(self) -> ExitStatus:
        """Wait for the main process; then kill whatever else is left in the
        leaf, so the job's output pipes reach end of file."""
        status = await self._process.wait()
        self._leaf.signal(signal.SIGKILL)
        return status

    def signal_tree(self, signum: int) -> None:
        self._leaf.signal(signum)

    def usage(self) -> ResourceUsage:
        """The leaf's figures; where the leaf has no memory controller (a
        hybrid host), the resident memory of the processes in it, and the
        highest such total seen."""
        if not self._leaf.exists():
            return ResourceUsage()
        stats = self._leaf.stats()
        memory_current, memory_peak = stats.memory_current, stats.memory_peak
        if memory_current is None:
            memory_current = sum(read_proc_usage(pid).memory_current for pid in self._leaf.pids())
            self._memory_peak_seen = max(self._memory_peak_seen, memory_current)
            memory_peak = self._memory_peak_seen
        return ResourceUsage(
            user_time=stats.user_seconds,
            system_time=stats.system_seconds,
            memory_current=memory_current,
            memory_peak=memory_peak or 0,
            oom_kills=stats.memory_oom_kills or 0,
            cpu_throttled_periods=stats.cpu_nr_throttled or 0,
            cpu_throttled_time=(stats.cpu_throttled_usec or 0) / 1e6,
            io_read_bytes=stats.io_read_bytes or 0,
            io_write_bytes=stats.io_write_bytes or 0,
        )

    async def aclose(self) -> None:
        """Kill what is left in the leaf, wait until it is empty and remove it.

        Cancellation may leave the (killed) leaf behind; the daemon removes
        leftover leaves at shutdown and at its next start.
        """
        try:
            await self._leaf.remove()
        finally:
            await self._process.aclose()


class CgroupSpawner:
    """Starts each job in its own leaf of ``tree``, its limits applied first."""

    def __init__(self, inner: Spawner, tree: CgroupTree) -> None:
        self._inner = inner
        self._tree = tree

    async def spawn(self, spec: ProcessSpec) -> JobProcess:
        """Raises what ``CgroupTree.create_job`` raises for limits it cannot
        honour, and what the inner spawner raises; no leaf is left then."""
        trace.mark("daemon cgroup-create")
        leaf = self._tree.create_job(spec.job_id, spec.limits)
        trace.mark("daemon cgroup-created")
        if leaf is None:
            return await self._inner.spawn(spec)
        try:
            process = await self._inner.spawn(replace(spec, cgroup_dir=str(leaf.path)))
        except BaseException:
            with trio.CancelScope(shield=True):
                await leaf.remove()
            raise
        return CgroupedProcess(process, leaf)

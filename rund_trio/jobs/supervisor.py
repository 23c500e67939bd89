"""The supervisor: one trio task per job, owning its process and output.

Shape of the task tree::

    Supervisor.run                 (nursery: one child per job)
      └─ _run_job                  owns the process, its pipes and its journal
           └─ record_streams(stdout, stderr)
                           (stdout: the terminal's master for a job with a tty)

A job's stdin (``jobs.stdio``) is fed by the Input RPC's own task; the job task
owns the pipe or terminal and closes it when the job ends, which ends a feeding
Input with ``FailedPrecondition``.

A Stop cancels the job's wait scope and the job task itself terminates the tree;
cancelling ``run`` (daemon shutdown) makes every job task kill and reap its
process in a shielded scope before it exits. Nothing else ever signals or reaps
a job's process.
"""

from __future__ import annotations

import errno
import logging
import math
import shlex
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import trio

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import (
    FailedPrecondition,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    Unsupported,
)
from rund_trio.isolation.spec import Isolation
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from rund_trio.jobs.quota import Quota
from rund_trio.jobs.spec import JobSpec, new_job_id
from rund_trio.jobs.state import JobRecord, JobSnapshot, OutputCounts, final_usage
from rund_trio.jobs.stdio import JobStdio, open_stdio
from rund_trio.jobs.table import JobTable
from rund_trio.jobs.termination import terminate
from rund_trio.logs.budget import Reserve
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.follower import follow_query
from rund_trio.logs.journal import Piece, Stream
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.query import WHOLE_LOG, LogQuery
from rund_trio.logs.recorder import record_streams
from rund_trio.logs.state_dir import journal_path
from rund_trio.process.base import ExitStatus, JobProcess, ProcessSpec, ResourceUsage, Spawner
from rund_trio.tls.identity import Identity

log = logging.getLogger(__name__)

DEFAULT_JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_TIMEOUT = 10.0
"""How long a job task waits for a SIGKILLed process to be reaped during
cleanup before giving up on it (a process stuck in the kernel)."""


class LimitPolicy(Protocol):
    """Decides whether this host can enforce a job's limits."""

    def check_limits(self, limits: Limits) -> None:
        """Raise ``Unsupported`` or ``InvalidRequest`` for limits that cannot
        be honoured as asked."""
        ...


class NoLimits:
    """The policy of a daemon without cgroup support: every limit is refused."""

    def check_limits(self, limits: Limits) -> None:
        requested = [name for name, value in vars(limits).items() if value is not None]
        if requested:
            raise Unsupported(
                "this daemon cannot enforce resource limits (no usable cgroup v2): "
                f"refusing {', '.join(requested)}"
            )


@dataclass(frozen=True)
class SupervisorConfig:
    state_dir: Path
    """Where job journals are written; private to the daemon."""
    output_cap: int | None = 1024**3
    """Bytes of output kept per job; the rest is dropped and counted."""
    max_output_total: int | None = 10 * 1024**3
    """Bytes of output of all jobs together in ``state_dir`` (journals are kept
    for the daemon's lifetime); None: no cap."""
    min_free_disk: Reserve = field(default_factory=Reserve)
    """Free space output never eats into on ``state_dir``'s filesystem."""
    output_linger: float = 2.0
    """Seconds to keep draining output after a job's main process ended, for
    what its killed descendants had already written."""
    shutdown_grace: float = 0.0
    """Grace period between SIGTERM and SIGKILL for jobs killed at shutdown."""
    isolation: IsolationPolicy = field(default_factory=IsolationPolicy)
    """How jobs are contained, and what a request may choose."""
    max_running_jobs: int | None = 4096
    """Jobs running at once, in total; None: no cap."""
    max_running_jobs_per_client: int | None = 1024
    """Jobs running at once per client identity (the SANs of its certificate)."""
    job_env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": DEFAULT_JOB_PATH, "HOME": "/", "LANG": "C.UTF-8"}
    )


USAGE_MAX_AGE = 0.05
"""Seconds a running job's CPU and memory figures may be reused for."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Job:
    """A job as the supervisor holds it, for the whole life of the daemon."""

    def __init__(
        self,
        record: JobRecord,
        owner: Identity,
        process: JobProcess,
        journal: JournalFile,
        stdio: JobStdio | None = None,
        working_dir: str = "/",
    ) -> None:
        self.record = record
        self.owner = owner
        self.process = process
        self.journal = journal
        self.stdio = stdio
        """Its stdin pipe or terminal; None: its stdin is /dev/null."""
        self.working_dir = working_dir
        self.exited = trio.Event()
        """Set once the job's main process is reaped and its status final."""
        self.done = trio.Event()
        """Set once nothing of the job is left: its tree is dead, its cgroup
        removed, its output complete."""
        self.stop_grace = 0.0
        self.wait_scope = trio.CancelScope()
        self._usage = ResourceUsage()
        self._usage_sampled_at = -math.inf

    @property
    def job_id(self) -> str:
        return self.record.job_id

    def snapshot(self) -> JobSnapshot:
        book = self.journal.book
        output = OutputCounts(book.recorded, book.dropped, book.error)
        return self.record.snapshot(self._live_usage(), output)

    def _live_usage(self) -> ResourceUsage:
        """The running job's usage, read at most every ``USAGE_MAX_AGE`` seconds:
        reading a cgroup's files costs more than the rest of a Status call."""
        if not self.record.running:
            return ResourceUsage()
        now = trio.current_time()
        if now - self._usage_sampled_at >= USAGE_MAX_AGE:
            self._usage = self.process.usage()
            self._usage_sampled_at = now
        return self._usage


class Supervisor:
    """Starts, stops and watches jobs; see the module docstring for the shape."""

    def __init__(
        self,
        spawner: Spawner,
        config: SupervisorConfig,
        *,
        limits: LimitPolicy | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._spawner = spawner
        self._config = config
        self._limits = limits if limits is not None else NoLimits()
        self._now = now
        self._jobs: JobTable[Job] = JobTable()
        self._nursery: trio.Nursery | None = None
        self._disk: StateDisk | None = None
        self._running = Quota(
            "running jobs",
            total=config.max_running_jobs,
            per_client=config.max_running_jobs_per_client,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the job tasks until cancelled.

        On cancellation every running job's tree is killed and reaped before
        this returns, and every journal file is deleted.
        """
        self._disk = StateDisk(
            self._config.state_dir,
            max_total=self._config.max_output_total,
            reserve=self._config.min_free_disk,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for job in self._jobs.all.values():
                job.journal.remove()
            self._disk.close()

    @property
    def jobs(self) -> Mapping[str, Job]:
        return self._jobs.all

    async def start(self, spec: JobSpec, owner: Identity) -> Job:
        """Start a job for ``owner`` and return once its program runs.

        Raises ``PermissionDenied`` for a caller without any SAN, ``Unsupported``
        for limits this host cannot enforce, ``ResourceExhausted`` at the caps
        on running jobs or when no more output can be recorded (the output total
        or the free-space reserve), ``SpawnError`` when the program cannot be
        executed. If the caller is cancelled before the job runs, no process is
        left behind.
        """
        if owner.is_anonymous:
            raise PermissionDenied(
                "your certificate has no subject alternative name, so jobs started "
                "with it could never be found again: use a certificate with a SAN"
            )
        self._limits.check_limits(spec.limits)
        isolation = self._config.isolation.isolation_for(spec.isolation, owner.sans)
        if self._nursery is None or self._disk is None:
            raise FailedPrecondition("the daemon is shutting down")
        if (full := self._disk.refusal()) is not None:
            raise ResourceExhausted(f"not starting jobs whose output could not be kept: {full}")
        self._running.acquire(owner.sans)
        try:
            job: Job = await self._nursery.start(self._run_job, spec, isolation, owner)
        except BaseException:
            self._running.release(owner.sans)
            raise
        return job

    def find(self, job_id: str, caller: Identity) -> Job:
        """The job ``job_id`` if ``caller`` may see it: it shares a SAN with the
        certificate that started it. Otherwise ``JobNotFound``, exactly as for
        an unknown id, and found the same way (``JobTable.find``)."""
        job = self._jobs.find(job_id, caller)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def stop(self, job: Job, grace: float = 0.0) -> JobSnapshot:
        """End ``job``'s whole tree and return its final status.

        A job that already ended keeps its status unchanged. Returns once
        nothing of the job is left (``Job.done``); if the caller is cancelled
        meanwhile, the job is still stopped.
        """
        if job.record.request_stop():
            job.stop_grace = max(0.0, grace)
            job.wait_scope.cancel()
        await job.done.wait()
        return job.snapshot()

    def follow(self, job: Job, query: LogQuery = WHOLE_LOG) -> AsyncGenerator[Piece, None]:
        """The job's output that ``query`` asks for (by default from its first
        byte, then live, until it ended and everything was read)."""
        return follow_query(job.journal, query)

    async def _run_job(
        self,
        spec: JobSpec,
        isolation: Isolation,
        owner: Identity,
        *,
        task_status: trio.TaskStatus[Job],
    ) -> None:
        job_id = new_job_id()
        path = journal_path(self._config.state_dir, job_id)
        try:
            journal = JournalFile(path, cap=self._config.output_cap, disk=self._disk)
        except OSError as error:
            message = f"cannot create the job's output file in {self._config.state_dir}: "
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(message + str(error.strerror)) from None
            raise FailedPrecondition(message + str(error.strerror)) from None
        stdio = None
        try:
            stdio, child_ends = open_stdio(spec.stdin, spec.terminal)
            try:
                process = await self._spawner.spawn(
                    ProcessSpec(
                        argv=spec.argv,
                        env=job_environment(self._config.job_env, spec, job_id),
                        cwd=spec.working_dir,
                        job_id=job_id,
                        limits=spec.limits,
                        isolation=isolation,
                        stdin_fd=child_ends.stdin,
                        terminal_fd=child_ends.terminal,
                    )
                )
            finally:
                child_ends.close()
        except BaseException:
            journal.remove()
            if stdio is not None:
                with trio.CancelScope(shield=True):
                    await stdio.aclose()
            raise
        profile = Profile.CONTAINED if isolation.contained else Profile.HOST
        record_ = JobRecord(job_id, spec.argv, process.program_pid, self._now(), profile=profile)
        job = Job(record_, owner, process, journal, stdio, spec.working_dir)
        self._jobs.add(job_id, owner, job)
        log.info(
            "job %s started by %s (%s): pid %d, %s",
            job_id,
            owner,
            profile.value,
            process.program_pid,
            shlex.join(spec.argv),
        )
        # From here on this task alone owns the process: it is reaped whatever happens.
        try:
            task_status.started(job)
            async with trio.open_nursery() as pipes:
                terminal = stdio.terminal if stdio is not None else None
                stdout = process.stdout if terminal is None else terminal
                pipes.start_soon(
                    record_streams,
                    {Stream.STDOUT: stdout, Stream.STDERR: process.stderr},
                    journal,
                )
                exit_status = await self._wait_or_stop(job)
                self._finish(job, exit_status)
                # Its tree is dead; collect what is still in the pipes, but do not
                # wait forever for a process that escaped the group and holds them.
                pipes.cancel_scope.deadline = trio.current_time() + self._config.output_linger
        finally:
            with trio.CancelScope(shield=True):
                if record_.running:
                    with trio.move_on_after(KILL_TIMEOUT):
                        self._finish(job, await terminate(process, self._config.shutdown_grace))
                if stdio is not None:
                    await stdio.aclose()  # closes fds only: never blocks
                with trio.move_on_after(KILL_TIMEOUT):
                    await process.aclose()
                journal.close()
                job.exited.set()
                self._running.release(owner.sans)
                job.done.set()

    async def feed(self, job: Job, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` into ``job``'s stdin (``JobStdio.feed``); the bytes
        written. ``FailedPrecondition`` for a job without stdin or one that ended."""
        if job.stdio is None or not job.stdio.feedable:
            raise FailedPrecondition(
                f"job {job.job_id} was started without stdin (its stdin is /dev/null): "
                "start it with -i to feed it"
            )
        if not job.record.running:
            raise FailedPrecondition(f"job {job.job_id} has ended: its stdin is closed")
        return await job.stdio.feed(chunks)

    def resize(self, job: Job, rows: int, cols: int) -> None:
        """Set ``job``'s terminal window; ``FailedPrecondition`` for a job
        without a terminal or one that ended."""
        terminal = job.stdio.terminal if job.stdio is not None else None
        if terminal is None:
            raise FailedPrecondition(f"job {job.job_id} has no terminal (start it with -t)")
        if not job.record.running:
            raise FailedPrecondition(f"job {job.job_id} has ended: its terminal is closed")
        terminal.resize(rows, cols)

    async def _wait_or_stop(self, job: Job) -> ExitStatus:
        with job.wait_scope:
            return await job.process.wait()
        return await terminate(job.process, job.stop_grace)

    def _finish(self, job: Job, exit_status: ExitStatus) -> None:
        last_seen = job.process.usage()
        job.record.finish(exit_status, final_usage(exit_status, last_seen), self._now())
        how = (
            f"exit code {exit_status.exit_code}"
            if exit_status.signal is None
            else f"signal {exit_status.signal}"
        )
        log.info("job %s %s: %s", job.job_id, job.record.state.value, how)
        job.exited.set()


def job_environment(defaults: Mapping[str, str], spec: JobSpec, job_id: str) -> dict[str, str]:
    """A job's environment: the daemon's defaults, ``TERM`` for a terminal,
    the request's entries (later ones winning), then ``RUND_JOB_ID``. Nothing
    of the daemon's or the client's own environment."""
    env = dict(defaults)
    if spec.terminal is not None:
        env["TERM"] = spec.terminal.term
    env.update(spec.env)
    env["RUND_JOB_ID"] = job_id
    return env

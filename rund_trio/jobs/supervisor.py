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

Running jobs live in memory (``Job``); every job also has a row in the state
directory's database (``jobs.store``), written before Start returns and
completed once the job has ended and its output is complete. From then on the
job is served from the database and its journal file alone (``StoredJob``),
until Remove, ``prune`` or retention forgets it.
"""

from __future__ import annotations

import errno
import logging
import math
import shlex
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import trio

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import (
    ConfigError,
    FailedPrecondition,
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    Unsupported,
)
from rund_trio.isolation import trace
from rund_trio.isolation.spec import Isolation
from rund_trio.jobs.events import JobEvents, NoJobEvents
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from rund_trio.jobs.quota import Quota
from rund_trio.jobs.spec import JobSpec, new_job_id
from rund_trio.jobs.state import JobRecord, JobSnapshot, OutputCounts, final_usage
from rund_trio.jobs.stdio import JobStdio, open_stdio
from rund_trio.jobs.store import JobStore, StartedWith, StoredJob, StoreError
from rund_trio.jobs.table import JobTable
from rund_trio.jobs.termination import terminate
from rund_trio.logs.budget import Reserve
from rund_trio.logs.disk import StateDisk
from rund_trio.logs.follower import follow_query
from rund_trio.logs.journal import Piece, Stream
from rund_trio.logs.journal_file import JournalFile
from rund_trio.logs.query import WHOLE_LOG, LogQuery
from rund_trio.logs.recorder import record_streams
from rund_trio.logs.state_dir import forget_job_files, journal_path, set_aside_orphans
from rund_trio.logs.stored import StoredJournal, scan_journal
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
    """Bytes of output of all retained jobs together in ``state_dir``; None: no cap."""
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
    retain_jobs: int | None = 10_000
    """Most ended jobs kept; the ones that ended first are forgotten first."""
    retain_for: float | None = 7 * 24 * 3600.0
    """Seconds an ended job is kept after it ended."""
    job_env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": DEFAULT_JOB_PATH, "HOME": "/", "LANG": "C.UTF-8"}
    )


FLUSH_PERIOD = 1.0
"""Seconds between two syncs of the job database, when it has unsynced commits."""

RETENTION_PERIOD = 60.0
"""Seconds between two sweeps for jobs past ``retain_for``."""

USAGE_MAX_AGE = 0.05
"""Seconds a running job's CPU and memory figures may be reused for."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Job:
    """A running job as the supervisor holds it, until it ended and its row is final."""

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
        self.grace_scope = trio.CancelScope()
        """Cancelled by a later Stop with a shorter grace: kill at once."""
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


class EndedJob:
    """An ended job, as its database row and journal file have it."""

    def __init__(self, stored: StoredJob, journal: Path) -> None:
        self.stored = stored
        self.journal = journal

    @property
    def job_id(self) -> str:
        return self.stored.snapshot.job_id

    def snapshot(self) -> JobSnapshot:
        return self.stored.snapshot


AnyJob = Job | EndedJob


class Supervisor:
    """Starts, stops and watches jobs; see the module docstring for the shape."""

    def __init__(
        self,
        spawner: Spawner,
        config: SupervisorConfig,
        *,
        limits: LimitPolicy | None = None,
        now: Callable[[], datetime] = _utc_now,
        store: JobStore | None = None,
        events: JobEvents | None = None,
    ) -> None:
        self._spawner = spawner
        self._events: JobEvents = events or NoJobEvents()
        self._config = config
        self._limits = limits if limits is not None else NoLimits()
        self._now = now
        self._jobs: JobTable[Job] = JobTable()
        self._nursery: trio.Nursery | None = None
        self._disk: StateDisk | None = None
        self._given_store = store
        self._store: JobStore | None = None
        self._ended_count = 0
        self._unrecorded: list[Job] = []
        self._running = Quota(
            "running jobs",
            total=config.max_running_jobs,
            per_client=config.max_running_jobs_per_client,
        )

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise FailedPrecondition("the daemon is not serving jobs (starting or shutting down)")
        return self._store

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the job tasks until cancelled.

        Before it reports started, the jobs an earlier daemon left running are
        recorded as lost and the journals no row refers to are set aside. On
        cancellation every running job's tree is killed and reaped and its
        final row written before this returns; journals are kept.
        """
        state_dir = self._config.state_dir
        store = self._given_store or JobStore.open(state_dir)
        try:
            try:
                lost = store.mark_lost(self._journal_extent, self._now())
            except sqlite3.Error as error:  # e.g. the disk is full
                raise ConfigError(
                    f"cannot record the jobs the previous daemon left running in {store.path}: "
                    f"{error}"
                ) from None
            if lost:
                log.warning(
                    "%d jobs were running when the previous daemon ended: recorded as lost",
                    len(lost),
                )
            try:
                orphans = set_aside_orphans(state_dir, store.ids())
            except OSError as error:
                raise ConfigError(
                    f"cannot set aside the job output files no record refers to in {state_dir}: "
                    f"{error.strerror}"
                ) from None
            if orphans:
                log.warning(
                    "moved the output files of %d jobs no job record refers to into %s "
                    "(look at them, then delete them)",
                    orphans,
                    state_dir / "orphans",
                )
            self._ended_count, retained_output = store.totals()
            self._disk = StateDisk(
                state_dir,
                max_total=self._config.max_output_total,
                reserve=self._config.min_free_disk,
            )
            self._disk.budget.used = retained_output
            self._store = store
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._apply_retention()
                nursery.start_soon(self._retention_sweeps)
                nursery.start_soon(self._flushes)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._store = None
            if self._disk is not None:
                self._disk.close()
            if self._given_store is None:
                store.close()

    def _journal_extent(self, job_id: str) -> tuple[int, int]:
        extent = scan_journal(journal_path(self._config.state_dir, job_id))
        return extent.size, extent.payload

    @property
    def jobs(self) -> Mapping[str, Job]:
        """The running jobs (and those whose end is being recorded), by id."""
        return self._jobs.all

    async def start(self, spec: JobSpec, owner: Identity) -> Job:
        """Start a job for ``owner`` and return once its program runs and its
        record is committed.

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
        self._events.job_started(job)
        return job

    def find(self, job_id: str, caller: Identity) -> AnyJob:
        """The job ``job_id`` if ``caller`` may see it: it shares a SAN with the
        certificate that started it. Otherwise ``JobNotFound``, exactly as for
        an unknown id, and found the same way (an index probe per SAN of the
        caller, in memory and then in the database)."""
        job = self._jobs.find(job_id, caller)
        if job is not None:
            return job
        stored = self.store.find(job_id, caller.sans)
        if stored is None or not stored.snapshot.ended:
            # A row still says running only while its job is in memory.
            raise JobNotFound(job_id)
        return EndedJob(stored, journal_path(self._config.state_dir, job_id))

    async def stop(self, job: AnyJob, grace: float = 0.0) -> JobSnapshot:
        """End ``job``'s whole tree and return its final status.

        A job that already ended keeps its status unchanged; a job already
        being stopped is killed once the shorter of both grace periods is
        over. Returns once nothing of the job is left (``Job.done``); if the
        caller is cancelled meanwhile, the job is still stopped.
        """
        if isinstance(job, EndedJob):
            return job.snapshot()
        grace = max(0.0, grace)
        if job.record.running and not job.record.stop_requested:
            job.record.request_stop()
            job.stop_grace = grace
            job.wait_scope.cancel()
        elif job.record.running:
            # A Stop while one is in its grace period: the shorter grace wins
            # (a second Ctrl-C of `client run` kills at once).
            deadline = trio.current_time() + grace
            job.grace_scope.deadline = min(job.grace_scope.deadline, deadline)
        await job.done.wait()
        return job.snapshot()

    async def wait(self, job: AnyJob) -> JobSnapshot:
        """``job``'s final status, once nothing of it is left (at once for an
        ended job). Cancellation is safe: nothing changes."""
        if isinstance(job, Job):
            await job.done.wait()
        return job.snapshot()

    async def remove(self, job: AnyJob, *, force: bool = False) -> JobSnapshot:
        """Forget an ended job: its row, then its output files; its last status.

        A running job is ``FailedPrecondition`` unless ``force``, which stops it
        (SIGKILL) first. ``JobNotFound`` if it was forgotten meanwhile. Log
        streams already reading it end once they have read what they can."""
        if isinstance(job, Job):
            if job.record.running and not force:
                raise FailedPrecondition(
                    f"job {job.job_id} is still running: stop it first, or remove it with force"
                )
            await self.stop(job)  # kills it if it runs; returns once nothing of it is left
        snapshot = job.snapshot()
        if not await self._forget([job.job_id]):
            raise JobNotFound(job.job_id)
        return snapshot

    async def _forget(self, job_ids: list[str]) -> int:
        """Delete the rows of ``job_ids``, then their files; how many were there."""
        deleted = await self.store.delete(job_ids)
        unrecorded = {job.job_id: job for job in self._unrecorded}
        for job_id, size in deleted:
            forget_job_files(self._config.state_dir, job_id)
            if (job := unrecorded.get(job_id)) is not None:  # its row still said running
                self._unrecorded.remove(job)
                self._jobs.remove(job_id, job.owner)
                size = job.journal.size
                self._ended_count += 1  # it was never counted
            if self._disk is not None:
                self._disk.budget.release(size)
        self._ended_count -= len(deleted)
        return len(deleted)

    def follow(self, job: AnyJob, query: LogQuery = WHOLE_LOG) -> AsyncGenerator[Piece, None]:
        """The job's output that ``query`` asks for (by default from its first
        byte, then live, until it ended and everything was read). The output of
        a job removed meanwhile ends early and cleanly."""
        if isinstance(job, Job):
            return follow_query(job.journal, query)
        return _follow_stored(StoredJournal(job.journal, job.stored.journal_size), query)

    def list(
        self, caller: Identity, ended: bool | None, before: str | None, limit: int
    ) -> list[JobSnapshot]:
        """Up to ``limit`` of the caller's jobs (those sharing a SAN with it),
        newest first, with ids below ``before``; ``ended`` None for all, else
        ended or running only. Running jobs are reported live."""
        snapshots = []
        for stored in self.store.page(caller.sans, ended, before, limit):
            live = self._jobs.all.get(stored.snapshot.job_id)
            snapshots.append(live.snapshot() if live is not None else stored.snapshot)
        return snapshots

    async def _flushes(self) -> None:
        """Bound what a power cut can take of the job database to a second."""
        while True:
            await trio.sleep(FLUSH_PERIOD)
            try:
                await self.store.flush()
            except StoreError as error:
                log.warning("cannot sync the job database: %s", error)

    async def _retention_sweeps(self) -> None:
        while True:
            await trio.sleep(RETENTION_PERIOD)
            await self._record_unrecorded_ends()
            await self._apply_retention()

    async def _apply_retention(self) -> None:
        """Forget the ended jobs beyond ``retain_jobs`` and older than ``retain_for``."""
        keep = self._config.retain_jobs
        over_count = keep is not None and self._ended_count > keep
        horizon = self._config.retain_for
        if not over_count and horizon is None:
            return
        ended_before = None if horizon is None else self._now() - timedelta(seconds=horizon)
        doomed = self.store.ended_beyond(keep if over_count else None, ended_before)
        if doomed:
            try:
                forgotten = await self._forget(doomed)
            except StoreError as error:
                log.warning("cannot forget ended jobs: %s", error)
                return
            log.info("retention forgot %d ended jobs", forgotten)

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
            stdio, child_ends = open_stdio(
                spec.stdin, spec.terminal, own_devpts=isolation.contained
            )
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
        except BaseException as error:
            journal.remove()
            if isinstance(error, Exception):
                self._events.spawn_failed(error)
            if stdio is not None:
                with trio.CancelScope(shield=True):
                    await stdio.aclose()
            raise
        profile = Profile.CONTAINED if isolation.contained else Profile.HOST
        record_ = JobRecord(job_id, spec.argv, process.program_pid, self._now(), profile=profile)
        job = Job(record_, owner, process, journal, stdio, spec.working_dir)
        try:
            trace.mark("daemon spawned")
            with trio.CancelScope(shield=True):  # the row exists, or Start fails
                await self.store.insert(
                    record_.snapshot(ResourceUsage(), OutputCounts()),
                    owner.sans,
                    StartedWith(
                        working_dir=spec.working_dir,
                        stdin=stdio is not None and stdio.feedable,
                        tty=stdio is not None and stdio.terminal is not None,
                    ),
                )
            trace.mark("daemon inserted")
            if self._disk is not None:
                self._disk.budget.recheck()
        except BaseException as error:
            with trio.CancelScope(shield=True), trio.move_on_after(KILL_TIMEOUT):
                await terminate(process, 0)
                await process.aclose()
                if stdio is not None:
                    await stdio.aclose()
            journal.remove()
            if isinstance(error, StoreError):
                raise FailedPrecondition(f"cannot record the job: {error}") from None
            raise
        self._jobs.add(job_id, owner, job)
        # From here on this task alone owns the process: it is reaped whatever happens.
        try:
            log.info(
                "job %s started by %s (%s): pid %d, %s",
                job_id,
                owner,
                profile.value,
                process.program_pid,
                shlex.join(spec.argv),
            )
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
                recorded = await self._record_end(job)
                self._events.job_ended(job)
                if recorded:
                    self._jobs.remove(job_id, owner)
                else:  # served from memory until a sweep manages to record it
                    self._unrecorded.append(job)
                await self._apply_retention()
                job.done.set()

    async def _record_end(self, job: Job) -> bool:
        """Write the ended job's final row (its journal synced first); whether
        it was written. Until it is, the row says running: the next daemon
        would report the job lost."""
        try:
            await self.store.finish(job.snapshot(), job.journal.path, job.journal.size)
        except (StoreError, FailedPrecondition) as error:
            log.error("job %s ended but its end could not be recorded: %s", job.job_id, error)
            return False
        finally:
            if self._disk is not None:
                self._disk.budget.recheck()
        self._ended_count += 1
        return True

    async def _record_unrecorded_ends(self) -> None:
        """Retry the final rows that could not be written (e.g. the disk was full)."""
        for job in list(self._unrecorded):
            if await self._record_end(job):
                self._unrecorded.remove(job)
                self._jobs.remove(job.job_id, job.owner)

    async def feed(self, job: AnyJob, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` into ``job``'s stdin (``JobStdio.feed``); the bytes
        written. ``FailedPrecondition`` for a job without stdin or one that ended."""
        if isinstance(job, EndedJob):
            raise FailedPrecondition(f"job {job.job_id} has ended: its stdin is closed")
        if job.stdio is None or not job.stdio.feedable:
            raise FailedPrecondition(
                f"job {job.job_id} was started without stdin (its stdin is /dev/null): "
                "start it with -i to feed it"
            )
        if not job.record.running:
            raise FailedPrecondition(f"job {job.job_id} has ended: its stdin is closed")
        return await job.stdio.feed(chunks)

    def resize(self, job: AnyJob, rows: int, cols: int) -> None:
        """Set ``job``'s terminal window; ``FailedPrecondition`` for a job
        without a terminal or one that ended."""
        if isinstance(job, EndedJob):
            raise FailedPrecondition(f"job {job.job_id} has ended: its terminal is closed")
        terminal = job.stdio.terminal if job.stdio is not None else None
        if terminal is None:
            raise FailedPrecondition(f"job {job.job_id} has no terminal (start it with -t)")
        if not job.record.running:
            raise FailedPrecondition(f"job {job.job_id} has ended: its terminal is closed")
        terminal.resize(rows, cols)

    async def _wait_or_stop(self, job: Job) -> ExitStatus:
        with job.wait_scope:
            return await job.process.wait()
        with job.grace_scope:
            return await terminate(job.process, job.stop_grace)
        return await terminate(job.process, 0)

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


async def _follow_stored(journal: StoredJournal, query: LogQuery) -> AsyncGenerator[Piece, None]:
    """``follow_query`` of a stored journal; a journal removed before it was
    opened reads as empty (the job was forgotten meanwhile)."""
    try:
        source = follow_query(journal, query)
        first = await anext(source)
    except (FileNotFoundError, StopAsyncIteration):
        return
    async with aclosing(source):
        yield first
        async for piece in source:
            yield piece


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

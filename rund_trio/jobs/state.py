"""A job's life as a plain state machine: no I/O, no trio, no clock of its own.

The supervisor feeds it events (started, stop requested, exited) with the time
they happened; the server reads ``JobSnapshot``s from it.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, replace
from datetime import datetime

from rund_trio.jobs.isolation_policy import Profile
from rund_trio.process.base import ExitStatus, ResourceUsage


class JobState(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"
    """Ended by itself with an exit code."""
    KILLED = "killed"
    """Ended by a signal nobody asked for (OOM, a kill from elsewhere)."""
    STOPPED = "stopped"
    """Ended after a Stop request."""
    LOST = "lost"
    """The daemon ended while the job ran (found so by the next daemon): killed,
    by no signal the daemon saw, with no exit code."""


@dataclass(frozen=True)
class OutputCounts:
    recorded_bytes: int = 0
    dropped_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True)
class JobSnapshot:
    """Everything Status reports about a job at one moment."""

    job_id: str
    argv: tuple[str, ...]
    pid: int
    state: JobState
    started_at: datetime
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    stop_requested: bool
    usage: ResourceUsage
    output: OutputCounts
    profile: Profile = Profile.CONTAINED

    @property
    def stopped(self) -> bool:
        return self.state is JobState.STOPPED

    @property
    def killed(self) -> bool:
        return self.signal is not None or self.state is JobState.LOST

    @property
    def ended(self) -> bool:
        return self.state is not JobState.RUNNING

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


class JobRecord:
    """The bookkeeping of one job from its start to its end."""

    def __init__(
        self,
        job_id: str,
        argv: tuple[str, ...],
        pid: int,
        started_at: datetime,
        *,
        profile: Profile = Profile.CONTAINED,
    ) -> None:
        self.job_id = job_id
        self.profile = profile
        self.argv = argv
        self.pid = pid
        self.started_at = started_at
        self.state = JobState.RUNNING
        self.stop_requested = False
        self.ended_at: datetime | None = None
        self.exit: ExitStatus | None = None
        self.final_usage: ResourceUsage | None = None

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    def request_stop(self) -> bool:
        """Note a Stop request. Returns False (and changes nothing) when the job
        has already ended: its status then stays exactly as it was."""
        if not self.running:
            return False
        self.stop_requested = True
        return True

    def finish(self, exit_status: ExitStatus, usage: ResourceUsage, at: datetime) -> None:
        """The job's process has ended and was reaped."""
        if not self.running:
            raise RuntimeError(f"job {self.job_id} finished twice")
        self.exit = exit_status
        self.final_usage = usage
        self.ended_at = at
        if self.stop_requested:
            self.state = JobState.STOPPED
        elif exit_status.signal is not None:
            self.state = JobState.KILLED
        else:
            self.state = JobState.EXITED

    def snapshot(self, live_usage: ResourceUsage, output: OutputCounts) -> JobSnapshot:
        """The job's status; ``live_usage`` is used only while it runs."""
        usage = self.final_usage if self.final_usage is not None else live_usage
        return JobSnapshot(
            job_id=self.job_id,
            argv=self.argv,
            pid=self.pid,
            state=self.state,
            started_at=self.started_at,
            ended_at=self.ended_at,
            exit_code=self.exit.exit_code if self.exit else None,
            signal=self.exit.signal if self.exit else None,
            stop_requested=self.stop_requested,
            usage=usage,
            output=output,
            profile=self.profile,
        )


def final_usage(exit_status: ExitStatus, last_seen: ResourceUsage) -> ResourceUsage:
    """The usage to keep once a job ended: the reaped CPU times (never less
    than last seen), no current memory, the last peak seen."""
    return replace(
        last_seen,
        user_time=max(exit_status.user_time, last_seen.user_time),
        system_time=max(exit_status.system_time, last_seen.system_time),
        memory_current=0,
    )

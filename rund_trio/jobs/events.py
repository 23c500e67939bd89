"""What the supervisor tells the rest of the daemon about jobs, for metrics
and the audit trail.

The supervisor calls a :class:`JobEvents` at fixed points of a job's life.
Implementations must not block or raise: they run on the job's own task (or
the starting request's), between two steps of the supervisor's bookkeeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rund_trio.jobs.supervisor import Job


class JobEvents(Protocol):
    def job_started(self, job: Job) -> None:
        """The job's program runs; called on the task of the request that
        started it, before Start answers."""

    def spawn_failed(self, error: BaseException) -> None:
        """A job's process could not be started (the request fails with ``error``)."""

    def job_ended(self, job: Job) -> None:
        """Nothing of the job is left: its status is final, its journal closed
        and complete on disk. Called once per started job, before ``job.done``
        is set (so before a Stop of it answers)."""


class NoJobEvents:
    """The default: nobody listens."""

    def job_started(self, job: Job) -> None:
        pass

    def spawn_failed(self, error: BaseException) -> None:
        pass

    def job_ended(self, job: Job) -> None:
        pass

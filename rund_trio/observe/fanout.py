"""One observer that tells several: the gRPC layer and the supervisor each
take a single observer, while metrics and the audit trail both listen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rund_trio.jobs.events import JobEvents
from rund_trio.server.calls import CallRecord, HandshakeOutcome, Observer

if TYPE_CHECKING:
    from rund_trio.jobs.supervisor import Job


class Fanout:
    """An ``Observer`` and ``JobEvents`` that calls each of its members in order."""

    def __init__(self, calls: Sequence[Observer], jobs: Sequence[JobEvents]) -> None:
        self._calls = list(calls)
        self._jobs = list(jobs)

    def connection_opened(self, peer: str) -> None:
        for observer in self._calls:
            observer.connection_opened(peer)

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None:
        for observer in self._calls:
            observer.handshake_finished(peer, outcome)

    def connection_closed(self, peer: str) -> None:
        for observer in self._calls:
            observer.connection_closed(peer)

    def call_finished(self, record: CallRecord) -> None:
        for observer in self._calls:
            observer.call_finished(record)

    def job_started(self, job: Job) -> None:
        for events in self._jobs:
            events.job_started(job)

    def spawn_failed(self, error: BaseException) -> None:
        for events in self._jobs:
            events.spawn_failed(error)

    def job_ended(self, job: Job) -> None:
        for events in self._jobs:
            events.job_ended(job)

"""Which jobs a caller can see: an index keyed by (SAN, job id). Plain
bookkeeping, no I/O.

A job is filed once under each SAN of the certificate that started it, so
finding a job is one dictionary probe per SAN of the caller, whether the job
exists or not: "it exists but is not yours" and "it does not exist" take the
same path and give the same answer, ``None``. Nothing about another client's
job -- not even that it exists -- changes what a caller's lookup does.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Generic, TypeVar

from rund_trio.tls.identity import Identity

T = TypeVar("T")


class JobTable(Generic[T]):
    """Jobs by id, and visible by the SANs of their owner."""

    def __init__(self, index: MutableMapping[tuple[str, str], T] | None = None) -> None:
        self._by_id: dict[str, T] = {}
        self._visible: MutableMapping[tuple[str, str], T] = {} if index is None else index

    @property
    def all(self) -> Mapping[str, T]:
        """Every job, by id (for the daemon itself, never for a caller)."""
        return self._by_id

    def add(self, job_id: str, owner: Identity, job: T) -> None:
        """File ``job`` under each of ``owner``'s SANs (an owner without SAN
        could never find it again: the supervisor refuses those)."""
        self._by_id[job_id] = job
        for san in owner.sans:
            self._visible[(san, job_id)] = job

    def remove(self, job_id: str, owner: Identity) -> None:
        """Forget ``job_id`` (filed under ``owner``); nothing if it is not there."""
        self._by_id.pop(job_id, None)
        for san in owner.sans:
            self._visible.pop((san, job_id), None)

    def find(self, job_id: str, caller: Identity) -> T | None:
        """The job ``job_id`` if it was started with a certificate sharing a SAN
        with ``caller``'s; None otherwise, alike for unknown ids."""
        for san in caller.sans:
            job = self._visible.get((san, job_id))
            if job is not None:
                return job
        return None

"""Caps on what clients may hold at once (running jobs, log streams), in
total and per client. Plain bookkeeping, no I/O.

A client is counted the way authorization sees it: by its SANs. Two
certificates that share a SAN reach each other's jobs, so they are one
principal for a quota too: every unit a client holds is counted against each
of its SANs, and a client may take one more only while none of its SANs is at
the cap. One person with two certificates sharing an email address therefore
gets the quota once, not twice. "Shares a SAN" is not transitive: with
certificates {a}, {a, b} and {b}, the middle one's units count against both
a and b and so against both of the others, while {a} and {b} do not take from
each other -- exactly who can see whose jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Iterator
from contextlib import contextmanager

from rund_trio.errors import ResourceExhausted


class Quota:
    """Counts held units of one resource against a total cap and a cap per
    client; ``None`` means no cap. A refused ``acquire`` changes nothing.

    A client is given as the collection of its principals (its SANs); see the
    module docstring for how they share a cap."""

    def __init__(self, what: str, *, total: int | None, per_client: int | None) -> None:
        self.what = what
        self.total = total
        self.per_client = per_client
        self._held: Counter[Hashable] = Counter()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def held_by(self, client: Collection[Hashable]) -> int:
        """Units counted against ``client``: the most held under any of its SANs."""
        return max((self._held[key] for key in client), default=0)

    def acquire(self, client: Collection[Hashable]) -> None:
        """Take one unit for ``client``; ``ResourceExhausted`` at a cap."""
        if self.total is not None and self._count >= self.total:
            raise ResourceExhausted(f"this daemon already has {self._count} {self.what}, its limit")
        held = self.held_by(client)
        if self.per_client is not None and held >= self.per_client:
            raise ResourceExhausted(
                f"you already have {held} {self.what}, the limit per client (counted over "
                "every certificate sharing a SAN with yours)"
            )
        for key in client:
            self._held[key] += 1
        self._count += 1

    def release(self, client: Collection[Hashable]) -> None:
        if not client or any(self._held[key] <= 0 for key in client):
            raise RuntimeError(f"release of {self.what} that {client!r} does not hold")
        for key in client:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
        self._count -= 1

    @contextmanager
    def held(self, client: Collection[Hashable]) -> Iterator[None]:
        """One unit for ``client`` while the block runs."""
        self.acquire(client)
        try:
            yield
        finally:
            self.release(client)

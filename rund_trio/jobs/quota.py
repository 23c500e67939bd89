"""Caps on what clients may hold at once (running jobs, log streams), in
total and per client identity. Plain bookkeeping, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

from rund_trio.errors import ResourceExhausted


class Quota:
    """Counts held units of one resource against a total cap and a cap per
    client; ``None`` means no cap. A refused ``acquire`` changes nothing."""

    def __init__(self, what: str, *, total: int | None, per_client: int | None) -> None:
        self.what = what
        self.total = total
        self.per_client = per_client
        self._held: Counter[Hashable] = Counter()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def held_by(self, client: Hashable) -> int:
        return self._held[client]

    def acquire(self, client: Hashable) -> None:
        """Take one unit for ``client``; ``ResourceExhausted`` at a cap."""
        if self.total is not None and self._count >= self.total:
            raise ResourceExhausted(f"this daemon already has {self._count} {self.what}, its limit")
        if self.per_client is not None and self._held[client] >= self.per_client:
            raise ResourceExhausted(
                f"you already have {self._held[client]} {self.what}, the limit per client"
            )
        self._held[client] += 1
        self._count += 1

    def release(self, client: Hashable) -> None:
        if self._held[client] <= 0:
            raise RuntimeError(f"release of {self.what} that {client!r} does not hold")
        self._held[client] -= 1
        if not self._held[client]:
            del self._held[client]
        self._count -= 1

    @contextmanager
    def held(self, client: Hashable) -> Iterator[None]:
        """One unit for ``client`` while the block runs."""
        self.acquire(client)
        try:
            yield
        finally:
            self.release(client)

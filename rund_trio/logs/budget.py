"""How much job output the daemon may still write to its state directory; no I/O.

Two limits bound the output of all jobs together, so that job output never
fills the disk: a total (``--max-output-total``) and a reserve of free space
left on the state directory's filesystem (``--min-free-disk``). Free space is
learnt from ``statvfs`` (by the caller, see ``rund_trio.logs.disk``) once
every ``check_every`` bytes written, and estimated in between by subtracting
what was written: the estimate never runs ahead of the daemon's own writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

MIB = 1024**2
CHECK_EVERY = MIB
"""Bytes written between two ``statvfs`` calls (one costs ~2 µs, a 256 KiB
write ~100 µs or more: checking per MiB keeps it out of the profile)."""


def describe_size(size: int) -> str:
    """``size`` bytes for a person: ``512 bytes``, ``64 KiB``, ``1.5 GiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class Reserve:
    """Free space to leave on a filesystem: a byte count, a fraction of the
    filesystem's size, or the smaller of both when both are given."""

    bytes: int | None = 1024**3
    fraction: float | None = 0.05

    def __post_init__(self) -> None:
        if self.bytes is not None and self.bytes < 0:
            raise ValueError("a free-space reserve cannot be negative")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError("a free-space reserve is a fraction between 0 and 1")

    def of(self, filesystem_size: int) -> int:
        """The reserve in bytes on a filesystem of ``filesystem_size`` bytes."""
        candidates = []
        if self.bytes is not None:
            candidates.append(self.bytes)
        if self.fraction is not None:
            candidates.append(int(filesystem_size * self.fraction))
        return min(candidates, default=0)


class Room(NamedTuple):
    """How many more bytes may be written, and what stops more (for messages;
    worded only when needed, since ``room`` is asked for every chunk)."""

    bytes: int | None
    """None: no limit."""
    reason: str | Callable[[], str] = ""

    @property
    def limit(self) -> str:
        return self.reason() if callable(self.reason) else self.reason

    def less(self, overhead: int) -> Room:
        """The room left for payload when each write costs ``overhead`` more."""
        if self.bytes is None:
            return self
        return Room(max(0, self.bytes - overhead), self.reason)


UNLIMITED = Room(None)


class DiskBudget:
    """The daemon-wide account of job output against the total and the reserve."""

    def __init__(
        self, *, max_total: int | None, min_free: int, check_every: int = CHECK_EVERY
    ) -> None:
        if max_total is not None and max_total < 0:
            raise ValueError("the output total cannot be negative")
        self.max_total = max_total
        self.min_free = min_free
        self.check_every = check_every
        self.used = 0
        self._free: int | None = None
        self._since_check = 0

    @property
    def check_due(self) -> bool:
        """Free space should be observed again before the next write."""
        return self._free is None or self._since_check >= self.check_every

    def observe_free(self, free: int) -> None:
        """The filesystem reports ``free`` bytes available."""
        self._free = free
        self._since_check = 0

    def charge(self, written: int) -> None:
        """``written`` bytes of job output reached the disk."""
        self.used += written
        self._since_check += written
        if self._free is not None:
            self._free -= written

    def release(self, size: int) -> None:
        """``size`` bytes of job output were deleted (the job was forgotten):
        they no longer count against the total. Free space is observed again
        at the next check."""
        self.used = max(0, self.used - size)
        self.recheck()

    def recheck(self) -> None:
        """Something else was written to the filesystem (the job database):
        observe free space again before the next write of output."""
        self._since_check = self.check_every

    def room(self) -> Room:
        """What may still be written before the total or the reserve is reached."""
        total = None if self.max_total is None else max(0, self.max_total - self.used)
        free = None if self._free is None else max(0, self._free - self.min_free)
        if free is not None and (total is None or free < total):
            return Room(free, self._reserve_reached)
        if total is not None:
            return Room(total, self._total_reached)
        return UNLIMITED

    def _total_reached(self) -> str:
        assert self.max_total is not None
        return (
            f"job output on this daemon reached --max-output-total "
            f"({describe_size(self.max_total)})"
        )

    def _reserve_reached(self) -> str:
        return (
            f"the state directory's filesystem is down to its reserve of free space "
            f"(--min-free-disk {describe_size(self.min_free)}, "
            f"{describe_size(max(0, self._free or 0))} free)"
        )

    def refusal(self) -> str | None:
        """Why no new job may start (its output could not be recorded), or None."""
        room = self.room()
        if room.bytes is not None and room.bytes <= 0:
            return room.limit
        return None

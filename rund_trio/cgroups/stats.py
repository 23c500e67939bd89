"""A cgroup's resource use: parsers for the stat files and a reader for a leaf.

The parsers are pure functions on file text; ``read_stats`` reads whichever of
the files exist, so a leaf without the memory or io controller still reports
its CPU time (cpu.stat exists in every cgroup v2 cgroup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rund_trio.cgroups.fs import CgroupFS

__all__ = [
    "CgroupStats",
    "parse_flat_keyed",
    "parse_io_stat",
    "parse_single_value",
    "read_stats",
]


@dataclass(frozen=True)
class CgroupStats:
    """One snapshot of a cgroup's resource use. None: the file is not there."""

    cpu_usage_usec: int = 0
    cpu_user_usec: int = 0
    cpu_system_usec: int = 0
    cpu_nr_throttled: int | None = None
    cpu_throttled_usec: int | None = None
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_oom_kills: int | None = None
    """memory.events ``oom_kill``: processes of the cgroup the OOM killer killed."""
    pids_current: int | None = None
    io_read_bytes: int | None = None
    """io.stat ``rbytes`` summed over devices."""
    io_write_bytes: int | None = None
    """io.stat ``wbytes`` summed over devices."""

    @property
    def user_seconds(self) -> float:
        return self.cpu_user_usec / 1e6

    @property
    def system_seconds(self) -> float:
        return self.cpu_system_usec / 1e6


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``KEY VALUE`` lines (cpu.stat, memory.events, pids.events, memory.stat).

    Lines that are not two fields with an integer value are skipped.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_single_value(text: str) -> int | None:
    """A one-value file (memory.current, pids.current); None for ``max`` or junk."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_io_stat(text: str) -> dict[str, int]:
    """io.stat's ``MAJ:MIN key=value ...`` lines, each key summed over devices."""
    totals: dict[str, int] = {}
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, sep, value = item.partition("=")
            if sep:
                try:
                    totals[key] = totals.get(key, 0) + int(value)
                except ValueError:
                    continue
    return totals


def read_stats(path: Path, fs: CgroupFS | None = None) -> CgroupStats:
    """Read the stats of the cgroup at ``path``; all-default if it is gone.

    Synchronous and cheap (a few small cgroupfs reads, no blocking I/O).
    """
    fs = fs or CgroupFS()

    def read(name: str) -> str | None:
        try:
            return fs.read(path / name)
        except OSError:
            return None

    cpu = parse_flat_keyed(read("cpu.stat") or "")
    current = read("memory.current")
    peak = read("memory.peak")
    events = read("memory.events")
    pids = read("pids.current")
    io = read("io.stat")
    io_totals = parse_io_stat(io) if io is not None else None
    return CgroupStats(
        cpu_usage_usec=cpu.get("usage_usec", 0),
        cpu_user_usec=cpu.get("user_usec", 0),
        cpu_system_usec=cpu.get("system_usec", 0),
        cpu_nr_throttled=cpu.get("nr_throttled"),
        cpu_throttled_usec=cpu.get("throttled_usec"),
        memory_current=parse_single_value(current) if current is not None else None,
        memory_peak=parse_single_value(peak) if peak is not None else None,
        memory_oom_kills=parse_flat_keyed(events).get("oom_kill") if events is not None else None,
        pids_current=parse_single_value(pids) if pids is not None else None,
        io_read_bytes=io_totals.get("rbytes", 0) if io_totals is not None else None,
        io_write_bytes=io_totals.get("wbytes", 0) if io_totals is not None else None,
    )

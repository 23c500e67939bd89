"""Small statistics helpers (milliseconds in, milliseconds out)."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99, max and mean of ``samples``."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.50),
        "p90": percentile(samples, 0.90),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def cpu_note(info: dict[str, float]) -> str:
    """The CPU figures a phase measured, for a row's note."""
    parts = []
    if "daemon_cpu" in info:
        parts.append(f"daemon {info['daemon_cpu']:.0%} CPU")
    parts.append(f"bench client {info['client_cpu']:.0%}")
    if "host_busy" in info:
        parts.append(f"host {info['host_busy']:.0%} busy of {os.cpu_count() or 1}00%")
    return ", ".join(parts)

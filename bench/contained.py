"""``--only contained``: what containing a job costs at its start.

A contained job (the default profile: user namespace, read-only host tree,
private /tmp and /dev, masked /proc, cgroup namespace, locked covers) against
today's namespaces without them (the host profile, ``contained=False``), both
started by the daemon's own fork server, spawn → running of ``/bin/true``,
in alternating rounds so that drift in the machine's load hits both. The
daemon's Start adds the same RPC and cgroup work to either. Needs root (a
figure, not a verdict: nothing here fails).
"""

from __future__ import annotations

import os
import time

import trio

from bench.report import Report
from bench.stats import summary
from rund_trio.isolation.spec import Isolation
from rund_trio.process.base import ProcessSpec
from rund_trio.process.forkserver import ForkServerSpawner

ROUNDS = 10
SPEC = ProcessSpec(("/bin/true",), {"PATH": "/usr/bin:/bin"})
HIDDEN = ("/etc/ssh",)
"""One cover, as a daemon always has (its state directory, its key)."""
KINDS = {
    "host profile (today's namespaces)": Isolation(contained=False, hidden=HIDDEN),
    "contained": Isolation(hidden=HIDDEN),
}


async def start_latencies(count: int) -> dict[str, list[float]]:
    """``count`` starts in all, in alternating rounds; milliseconds."""
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    spawner = ForkServerSpawner(Isolation.none())
    try:
        for isolation in KINDS.values():  # warm up
            await (await spawner.spawn(_spec(isolation))).wait()
        per_round = max(1, count // (ROUNDS * len(KINDS)))
        for _ in range(ROUNDS):
            for kind, isolation in KINDS.items():
                spec = _spec(isolation)
                for _ in range(per_round):
                    begin = time.perf_counter()
                    process = await spawner.spawn(spec)
                    samples[kind].append((time.perf_counter() - begin) * 1000)
                    await process.wait()
                    await process.aclose()
    finally:
        await spawner.aclose()
    return samples


def _spec(isolation: Isolation) -> ProcessSpec:
    return ProcessSpec(SPEC.argv, SPEC.env, isolation=isolation)


def bench_contained(report: Report, count: int) -> None:
    if os.geteuid() != 0:
        report.notes.append("contained: skipped (needs root)")
        return
    samples = trio.run(start_latencies, count)
    figures = {kind: summary(values) for kind, values in samples.items()}
    report.raw["contained_start_ms"] = figures
    for kind, s in figures.items():
        for q in ("p50", "p99"):
            report.add(
                f"contained.{kind}.{q}",
                "contained",
                f"fork server start, {kind}, {q}",
                s.get(q),
                "ms",
                note=f"n={s['n']}, spawn -> running, /bin/true",
            )
    host, contained = figures.values()
    if host["n"] and contained["n"]:
        report.add(
            "contained.cost.p50",
            "contained",
            "  cost of containing, p50",
            contained["p50"] - host["p50"],
            "ms",
        )

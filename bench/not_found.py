"""``--only not-found``: how long NOT_FOUND takes for a job that exists but is
another client's, and for a job that does not exist.

The daemon finds jobs with one lookup that gives nothing alike for both
(``rund_trio.jobs.table``); this measures it from outside, as a stranger
would probe: Status calls over one warm connection, the two kinds in
alternating rounds (so that drift in the machine's load hits both), p50 and
p99 of each and the difference. A figure, not a verdict: nothing here fails.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import trio

from bench import rund_load
from bench.daemon import Pki, clean_env, rund_executable, spawn_daemon
from bench.report import Report
from bench.stats import summary
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.jobs.spec import new_job_id
from rund_trio.tls.context import client_ssl_context

STRANGER = "stranger"
OWNED_JOBS = 32
ROUNDS = 8


def stranger_context(pki: Pki) -> ssl.SSLContext:
    """A second client certificate from the same CA, with a SAN of its own."""
    subprocess.run(
        [rund_executable(), "certs", "--out", str(pki.dir), "--client", STRANGER],
        check=True,
        stdout=subprocess.DEVNULL,
        env=clean_env(),
        timeout=60,
    )
    d = pki.dir
    return client_ssl_context(d / "ca.pem", d / f"{STRANGER}.pem", d / f"{STRANGER}-key.pem")


async def not_found_latencies(
    addr: str, ctx: ssl.SSLContext, owned: list[str], *, count: int, max_seconds: float
) -> dict[str, list[float]]:
    """Status of ``owned`` jobs and of fresh unknown ids, ``count`` calls in
    all, in alternating rounds; every answer must be NOT_FOUND."""
    unknown = [new_job_id() for _ in range(count)]  # made before the clock starts
    kinds: dict[str, Any] = {
        "another client's job": lambda i: owned[i % len(owned)],
        "a job that does not exist": lambda i: unknown[i % len(unknown)],
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    per_round = max(1, count // (ROUNDS * len(kinds)))
    round_seconds = max_seconds / (ROUNDS * len(kinds))
    for _ in range(ROUNDS):
        for kind, job_id in kinds.items():

            async def status(conn: RundClient, i: int, job_id: Any = job_id) -> None:
                try:
                    await conn.status(job_id(i))
                except RpcError as error:
                    if error.code != "NOT_FOUND":
                        raise
                    return
                raise AssertionError("a stranger's Status succeeded")

            lat = await rund_load.timed_calls(
                addr, ctx, status, clients=1, count=per_round, max_seconds=round_seconds
            )
            if lat.errors:
                raise SystemExit(f"bench not-found: {lat.errors} answers were not NOT_FOUND")
            samples[kind] += lat.samples_ms
    return samples


def bench_not_found(report: Report, pki: Pki, work: Path, count: int, seconds: float) -> None:
    stranger = stranger_context(pki)
    daemon = spawn_daemon("not-found", pki, work)
    owner = pki.client_context()
    try:
        started = trio.run(
            lambda: rund_load.start_jobs(
                daemon.addr,
                owner,
                ("sleep", "600"),
                clients=1,
                count=0,
                max_seconds=30,
                warmup=OWNED_JOBS,
            )
        )
        samples = trio.run(
            lambda: not_found_latencies(
                daemon.addr, stranger, started.job_ids, count=count, max_seconds=seconds
            )
        )
        trio.run(lambda: rund_load.stop_all(daemon.addr, owner, started.job_ids))
    finally:
        report.daemon_exit("not-found", daemon.stop())
    figures = {kind: summary(values) for kind, values in samples.items()}
    report.raw["not_found_ms"] = figures
    for kind, s in figures.items():
        for q in ("p50", "p99"):
            report.add(
                f"not_found.{kind}.{q}",
                "not-found",
                f"NOT_FOUND for {kind}, {q}",
                s.get(q),
                "ms",
                note=f"n={s['n']}, 1 client, Status",
            )
    mine, none = figures.values()
    if mine["n"] and none["n"]:
        for q in ("p50", "p99"):
            report.add(
                f"not_found.difference.{q}",
                "not-found",
                f"  difference of the {q}s",
                abs(mine[q] - none[q]),
                "ms",
            )

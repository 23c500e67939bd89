"""``--only retained``: what keeping ended jobs costs (issue #10).

A daemon on a state directory of its own runs N short jobs to their end, then:
its RSS per retained job; List of one page of 100 (the first page, and one
deep in the list through a page token), p50 and p99 over one warm
connection; then a restart on the same state directory until it serves (its
"listening on"), beside a start on an empty one, and Status of a retained job
afterwards. Jobs run without namespaces or cgroups: starting them is not what
is measured here.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import trio

from bench import rund_load
from bench.daemon import Daemon, Pki, spawn_daemon
from bench.report import Report
from bench.stats import summary
from rund_trio.client.api import RundClient

PLAIN = ("--no-namespaces", "--default-profile", "host", "--no-cgroups")
LIST_CALLS = 300


async def token_at(addr: str, ctx: ssl.SSLContext, pages: int) -> str:
    """The page token of page ``pages`` + 1 (pages of 100)."""
    token = ""
    async with RundClient.connect(addr, ctx) as conn:
        for _ in range(pages):
            token = (await conn.list_jobs(page_size=100, page_token=token)).next_page_token
    return token


async def list_latencies(addr: str, ctx: ssl.SSLContext, token: str) -> rund_load.Latencies:
    async def one_page(conn: RundClient, _: int) -> None:
        page = await conn.list_jobs(page_size=100, page_token=token)
        assert len(page.jobs) == 100

    return await rund_load.timed_calls(
        addr, ctx, one_page, clients=1, count=LIST_CALLS, max_seconds=60
    )


async def one_status(addr: str, ctx: ssl.SSLContext, job_id: str) -> float:
    async with RundClient.connect(addr, ctx) as conn:
        begin = time.perf_counter()
        await conn.status(job_id)
        return (time.perf_counter() - begin) * 1000


def timed_spawn(name: str, pki: Pki, work: Path) -> tuple[float, Daemon]:
    begin = time.perf_counter()
    daemon = spawn_daemon(name, pki, work, *PLAIN)
    return time.perf_counter() - begin, daemon


def bench_retained(report: Report, pki: Pki, work: Path, count: int) -> None:
    ctx = pki.client_context()
    daemon = spawn_daemon("retained", pki, work, *PLAIN)
    try:
        before = daemon.rss_kib()
        started = trio.run(
            lambda: rund_load.start_jobs(
                daemon.addr, ctx, ("true",), clients=8, count=count, max_seconds=600, warmup=0
            )
        )
        trio.run(rund_load.wait_ended, daemon.addr, ctx, started.job_ids[-8:], 60)
        time.sleep(1.0)
        after = daemon.rss_kib()
        retained = len(started.job_ids)
        first = trio.run(list_latencies, daemon.addr, ctx, "")
        deep_token = trio.run(token_at, daemon.addr, ctx, max(1, retained // 200))
        deep = trio.run(list_latencies, daemon.addr, ctx, deep_token)
    finally:
        report.daemon_exit("retained", daemon.stop(timeout=120))
    empty_s, empty = timed_spawn("retained-empty", pki, work)
    report.daemon_exit("retained-empty", empty.stop())
    restart_s, again = timed_spawn("retained", pki, work)
    try:
        status_ms = trio.run(one_status, again.addr, ctx, started.job_ids[0])
        after_restart = again.rss_kib()
    finally:
        report.daemon_exit("retained (restarted)", again.stop())

    per_job = (after - before) / retained if retained else None
    report.raw["retained"] = {
        "jobs": retained,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_restart_kib": after_restart,
        "start_rate": started.rate,
        "list_first_ms": summary(first.samples_ms),
        "list_deep_ms": summary(deep.samples_ms),
        "restart_s": restart_s,
        "empty_start_s": empty_s,
        "status_after_restart_ms": status_ms,
    }
    note = f"{retained:,} retained jobs"
    report.add(
        "retained.rss_per_job", "retention", "daemon RSS per retained job", per_job, "KiB",
        target=8, note=f"{note}, RSS {before / 1024:.0f}→{after / 1024:.0f} MiB "
        f"({after_restart / 1024:.0f} MiB after a restart)",
    )  # fmt: skip
    for key, label, lat in (("first", "first page", first), ("deep", "a deep page", deep)):
        stats = summary(lat.samples_ms)
        report.add(
            f"retained.list_{key}.p50", "retention", f"List 100 of {retained:,}: {label} p50",
            stats["p50"], "ms", target=20, note=f"{len(lat.samples_ms)} calls, 1 connection",
        )  # fmt: skip
        report.add(
            f"retained.list_{key}.p99", "retention", f"List 100 of {retained:,}: {label} p99",
            stats["p99"], "ms",
        )  # fmt: skip
    report.add(
        "retained.restart", "retention", f"restart with {retained:,} retained jobs until it serves",
        restart_s, "s", target=2,
        note=f"spawn to 'listening on'; {empty_s:.2f} s on an empty state dir; "
        f"then Status of a retained job {status_ms:.1f} ms",
    )  # fmt: skip

"""The load: a real ``rund-trio serve`` subprocess (``bench.daemon``) and
``--clients`` trio tasks, each with its own mTLS connection, running a random
mix of Start, Status, Log and Stop; first a warm-up, then the measured load.

It fails (exit 1) on any error but the intended RESOURCE_EXHAUSTED (Start at
``--max-running-jobs``, a Log of a job beyond ``--output-cap``), on any byte a
subscriber got wrong, missed or got twice, and on growth of the daemon's
descriptors or memory between the end of the warm-up and the end of the load.
"""

from __future__ import annotations

import argparse
import os
import random
import ssl
import tempfile
import time
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import trio

from bench.daemon import Daemon, Pki, spawn_daemon
from loadtest import flood
from loadtest.checks import FinalStatus, JobPlan, Received, violations
from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError, RundError

STATES = {
    pb.JOB_STATE_EXITED: "exited",
    pb.JOB_STATE_STOPPED: "stopped",
    pb.JOB_STATE_KILLED: "killed",
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_LOST: "lost",
}
OUTPUT_CAP = 256 * 1024
RSS_SLACK_KIB = 16 * 1024
"""Memory the daemon may grow by, whatever the load (allocator noise)."""
RSS_PER_JOB_KIB = 8
"""The daemon keeps every job's record for its lifetime (there is no
retention yet): this much per job started is not counted as a leak."""


@dataclass
class Tally:
    ops: Counter[str] = field(default_factory=Counter)
    intended: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    bytes_checked: int = 0
    jobs: list[JobPlan] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)
    long_running: list[int] = field(default_factory=list)

    def violation(self, text: str) -> None:
        self.violations.append(text)


class Load:
    def __init__(self, daemon: Daemon, ctx: ssl.SSLContext, seed: int) -> None:
        self.daemon = daemon
        self.ctx = ctx
        self.rng = random.Random(seed)
        self.tally = Tally()

    def connect(self) -> AbstractAsyncContextManager[RundClient]:
        return RundClient.connect(self.daemon.addr, self.ctx)

    def plan(self) -> JobPlan:
        long = self.rng.random() < 0.15
        plan = JobPlan(
            index=len(self.tally.jobs),
            stdout=self.rng.choice([0, 1, 100, 4096, 65536, 200_000, 300_000]),
            stderr=self.rng.choice([0, 7, 5000, 70_000]),
            long=long,
        )
        self.tally.jobs.append(plan)
        return plan

    async def start(self, rund: RundClient) -> int | None:
        plan = self.plan()
        argv = plan.argv()
        try:
            job_id = await rund.start(pb.JobStartRequest(name=argv[0], args=argv[1:]))
        except RpcError as error:
            if error.code == "RESOURCE_EXHAUSTED" and "running jobs" in error.message:
                self.tally.intended["Start at --max-running-jobs"] += 1
                return None
            raise
        self.tally.ids[plan.index] = job_id
        if plan.long:
            self.tally.long_running.append(plan.index)
        return plan.index

    async def follow(self, rund: RundClient, index: int) -> None:
        """Read the job's whole log, then check it against its final status."""
        plan, job_id = self.tally.jobs[index], self.tally.ids[index]
        got = Received()
        try:
            async for chunk in rund.log(job_id):
                got.add(chunk.stdout, chunk.stderr)
        except RpcError as error:
            if error.code != "RESOURCE_EXHAUSTED":
                raise
            got.end = error.code
            self.tally.intended["Log beyond --output-cap"] += 1
        status = await rund.status(job_id)
        final = FinalStatus(
            STATES[status.state],
            status.exit_code.value if status.HasField("exit_code") else None,
            status.output_bytes,
            status.output_dropped_bytes,
        )
        for text in violations(plan, got, final):
            self.tally.violation(text)
        self.tally.bytes_checked += got.stdout_bytes + got.stderr_bytes

    def finished_job(self) -> int | None:
        """A job that ends by itself (or was stopped), to subscribe to."""
        candidates = [i for i in list(self.tally.ids)[-200:] if i not in self.tally.long_running]
        return self.rng.choice(candidates) if candidates else None

    async def stop_one(self, rund: RundClient) -> int | None:
        if not self.tally.long_running:
            return None
        index = self.tally.long_running.pop(self.rng.randrange(len(self.tally.long_running)))
        grace = timedelta(seconds=1) if self.rng.random() < 0.3 else None
        await rund.stop(self.tally.ids[index], grace)
        return index

    async def client(self, deadline: float) -> None:
        async with self.connect() as rund:
            while trio.current_time() < deadline:
                roll = self.rng.random()
                try:
                    if roll < 0.4:
                        self.tally.ops["Start"] += 1
                        index = await self.start(rund)
                        followed = index is not None and not self.tally.jobs[index].long
                        if index is not None and followed and self.rng.random() < 0.7:
                            self.tally.ops["Log"] += 1
                            await self.follow(rund, index)
                    elif roll < 0.6:
                        index = self.finished_job()
                        if index is not None:
                            self.tally.ops["Log"] += 1
                            await self.follow(rund, index)
                    elif roll < 0.85:
                        if self.tally.ids:
                            self.tally.ops["Status"] += 1
                            await rund.status(self.rng.choice(list(self.tally.ids.values())))
                    else:
                        self.tally.ops["Stop"] += 1
                        index = await self.stop_one(rund)
                        if index is not None:
                            self.tally.ops["Log"] += 1
                            await self.follow(rund, index)
                except RundError as error:
                    self.tally.violation(f"{type(error).__name__}: {error}")

    async def run(self, clients: int, seconds: float) -> None:
        deadline = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(self.client, deadline)
        await self.quiesce()

    async def quiesce(self) -> None:
        """Stop every long job and wait until every job has ended."""
        async with self.connect() as rund:
            while self.tally.long_running:
                await self.stop_one(rund)
            for job_id in self.tally.ids.values():
                with trio.fail_after(60):
                    while (await rund.status(job_id)).state == pb.JOB_STATE_RUNNING:
                        await trio.sleep(0.05)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settled_fds(pid: int, at_most: int | None = None) -> int:
    """The daemon's descriptor count once closed connections are gone: the
    first of three equal readings 0.1 s apart (or the first at or below
    ``at_most``), within 10 s."""
    readings: list[int] = []
    with trio.move_on_after(10):
        while True:
            readings.append(fd_count(pid))
            if at_most is not None and readings[-1] <= at_most:
                break
            if len(readings) >= 3 and len(set(readings[-3:])) == 1 and at_most is None:
                break
            await trio.sleep(0.1)
    return readings[-1]


@dataclass
class Result:
    clients: int
    seconds: float
    warmup: float
    tally: Tally
    jobs_in_load: int
    rss_kib: tuple[int, int]
    fds: tuple[int, int]
    elapsed: float

    @property
    def rss_allowance_kib(self) -> int:
        return RSS_SLACK_KIB + RSS_PER_JOB_KIB * self.jobs_in_load

    def problems(self) -> list[str]:
        out = list(self.tally.violations)
        if self.fds[1] > self.fds[0]:
            out.append(f"the daemon's descriptors grew from {self.fds[0]} to {self.fds[1]}")
        growth = self.rss_kib[1] - self.rss_kib[0]
        if growth > self.rss_allowance_kib:
            out.append(
                f"the daemon's RSS grew by {growth} KiB, more than {self.rss_allowance_kib} KiB "
                f"({RSS_SLACK_KIB} + {RSS_PER_JOB_KIB} per job for {self.jobs_in_load} jobs)"
            )
        return out

    def report(self) -> str:
        t = self.tally
        ops = ", ".join(f"{name} {count}" for name, count in sorted(t.ops.items()))
        intended = ", ".join(f"{name}: {n}" for name, n in sorted(t.intended.items())) or "none"
        problems = self.problems()
        lines = [
            f"load: {self.clients} clients for {self.warmup:.0f} s of warm-up and "
            f"{self.seconds:.0f} s of load ({self.elapsed:.0f} s in all); both counted below",
            f"  operations: {ops} ({sum(t.ops.values()) / (self.warmup + self.seconds):.0f}/s)",
            f"  jobs started: {len(t.ids)} ({self.jobs_in_load} after the warm-up); "
            f"log bytes checked: {t.bytes_checked / 1024**2:.1f} MiB",
            f"  intended RESOURCE_EXHAUSTED: {intended}",
            f"  daemon RSS after warm-up {self.rss_kib[0]} KiB, after load {self.rss_kib[1]} KiB "
            f"(allowed growth {self.rss_allowance_kib} KiB)",
            f"  daemon descriptors after warm-up {self.fds[0]}, after load {self.fds[1]}",
        ]
        if problems:
            lines.append(f"FAILED: {len(problems)} problem(s); the first ones:")
            lines.extend(f"  - {p}" for p in problems[:20])
        else:
            lines.append("OK")
        return "\n".join(lines)


async def run_load(
    daemon: Daemon, ctx: ssl.SSLContext, *, clients: int, seconds: float, warmup: float, seed: int
) -> Result:
    began = time.monotonic()
    load = Load(daemon, ctx, seed)
    await load.run(clients, warmup)
    fds_before = await settled_fds(daemon.pid)
    rss_before = daemon.rss_kib()
    jobs_before = len(load.tally.ids)
    await load.run(clients, seconds)
    fds_after = await settled_fds(daemon.pid, at_most=fds_before)
    rss_after = daemon.rss_kib()
    return Result(
        clients,
        seconds,
        warmup,
        load.tally,
        len(load.tally.ids) - jobs_before,
        (rss_before, rss_after),
        (fds_before, fds_after),
        time.monotonic() - began,
    )


def daemon_flags(max_running_jobs: int) -> list[str]:
    return [
        "--max-running-jobs",
        str(max_running_jobs),
        "--output-cap",
        str(OUTPUT_CAP),
    ]


def load_test(
    *, clients: int, seconds: float, warmup: float, max_running_jobs: int, seed: int = 1
) -> Result:
    """Start a daemon in a temporary directory, run the load, stop the daemon."""
    with tempfile.TemporaryDirectory(prefix="rund-load-") as tmp:
        work = Path(tmp)
        pki = Pki.create(work / "pki")
        daemon = spawn_daemon("load", pki, work, *daemon_flags(max_running_jobs))
        try:
            result = trio.run(
                lambda: run_load(
                    daemon,
                    pki.client_context(),  # type: ignore[no-untyped-call]
                    clients=clients,
                    seconds=seconds,
                    warmup=warmup,
                    seed=seed,
                )
            )
        finally:
            code = daemon.stop()
        if code != 0:
            result.tally.violation(
                f"the daemon exited {code}:\n" + "".join(daemon.stderr_lines[-20:])
            )
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=180.0, metavar="SECONDS")
    parser.add_argument("--warmup", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument(
        "--max-running-jobs",
        type=int,
        default=40,
        metavar="N",
        help="the daemon's cap, below --clients so that Starts meet it (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    flood.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.flood is not None:
        return flood.run_from_args(args)
    result = load_test(
        clients=args.clients,
        seconds=args.duration,
        warmup=args.warmup,
        max_running_jobs=args.max_running_jobs,
        seed=args.seed,
    )
    print(result.report())
    return 1 if result.problems() else 0

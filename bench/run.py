"""``python -m bench [--quick]``: see bench/__init__.py.

Phases, in order (each bounded in count and time, loopback only):
  floor    posix_spawn + wait of /bin/true; 1 GB through a local pipe
  ssh      a private sshd: `ssh ... true` wall time, `ssh ... head -c 1G /dev/zero` MB/s
  default  a daemon with default settings: Start latency (1 client, 8 clients),
           Status throughput, Log throughput (1 and 32 subscribers), a job
           writing 1 GB with nobody following
  cli      a daemon of its own: `client start`, `client run`, `client status ID`
           (whole processes) and `ssh ... true` in alternating rounds
  plain    a daemon with --no-namespaces --default-profile host --no-cgroups: Start latency,
           RSS per finished job
  scale    a fresh default daemon: RSS per finished job, then N `sleep 600`
           running at once: RSS per running job, Status p99, a Log answering
  io       a default daemon and a private sshd: keystroke to echo through
           `client run -it` vs `ssh -tt`, stdin MB/s into `cat > /dev/null`
  output   (only with --only) the "job writes SIZE to stdout, no subscriber" row alone,
           beside `head -c SIZE /dev/zero | cat > /dev/null`, alternating rounds on one
           default daemon (the job row is the median of the rounds)
  not-found  (only with --only) NOT_FOUND p50/p99, another client's job vs none
  status   (only with --only) the Status rows of `default` alone, with the grpc.aio counterpart
  profiles   (only with --only) Start latency of contained jobs (the default) against
           host jobs (--default-profile host: what every job was before profiles),
           two daemons measured in alternating rounds, through the Start RPC
  contained  (only with --only, root) the same at the fork server alone: spawn → running
           p50/p99 of a contained job vs a host job
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import rund_trio
from bench import baselines, contained, grpc_aio, job_io, not_found, retained, rund_load
from bench.daemon import Daemon, Pki, clean_env, rund_executable, spawn_daemon
from bench.report import Report
from bench.stats import median
from rund_trio.wire.heap import keep_stream_buffers_in_heap

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    start_seq: int
    start_conc: int
    status_count: int
    status_seconds: float
    log_size: str
    log_seconds: float
    running_jobs: int
    finished_jobs: int
    finished_seconds: float
    cli_runs: int
    ssh_runs: int
    spawn_runs: int
    pipe_repeat: int
    retained_jobs: int = 10_000
    clients: int = 8
    subscribers: int = 32
    keystrokes: int = 200


QUICK = Sizes(
    start_seq=100,
    start_conc=120,
    status_count=5000,
    status_seconds=3,
    log_size="256M",
    log_seconds=7,
    running_jobs=200,
    finished_jobs=600,
    finished_seconds=8,
    cli_runs=5,
    ssh_runs=5,
    spawn_runs=300,
    pipe_repeat=1,
    retained_jobs=1000,
)
FULL = Sizes(
    start_seq=500,
    start_conc=504,
    status_count=60000,
    status_seconds=12,
    log_size="1G",
    log_seconds=40,
    running_jobs=1000,
    finished_jobs=10000,
    finished_seconds=150,
    cli_runs=15,
    ssh_runs=15,
    spawn_runs=1000,
    pipe_repeat=3,
)


class Phase:
    """CPU use of the daemon and of this process over a block, as a share of one core."""

    def __init__(self, daemon: Daemon | None) -> None:
        self.daemon = daemon
        self.info: dict[str, float] = {}

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        d0 = self.daemon.cpu_seconds() if self.daemon else 0.0
        h0 = host_cpu()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        info: dict[str, float] = {}
        yield info
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        info["wall_s"] = wall
        if self.daemon:
            info["daemon_cpu"] = (self.daemon.cpu_seconds() - d0) / wall
        info["client_cpu"] = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall
        h1 = host_cpu()
        info["host_busy"] = (h1[0] - h0[0]) / max(1, h1[1] - h0[1]) * (os.cpu_count() or 1)


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def run_async(
    daemon: Daemon | None, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, dict[str, float]]:
    with Phase(daemon).measure() as info:
        result = trio.run(lambda: fn(*args, **kwargs))
    return result, info


class Profiler:
    """``--profile``: py-spy records the daemon during chosen phases."""

    def __init__(self, enabled: bool, out: Path) -> None:
        self.enabled = enabled
        self.out = out
        self.files: dict[str, Path] = {}

    @contextlib.contextmanager
    def record(self, name: str, daemon: Daemon) -> Iterator[None]:
        pyspy = Path(sys.executable).parent / "py-spy"
        if not self.enabled or not pyspy.exists():
            yield
            return
        path = self.out / f"profile-{name}.txt"
        proc = subprocess.Popen(
            [
                str(pyspy),
                "record",
                "--pid",
                str(daemon.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(path),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.files[name] = path


def bench_status_rows(
    report: Report, daemon: Daemon, ctx: Any, work: Path, sz: Sizes, prof: Profiler
) -> None:
    """Status throughput against a running job, then its grpc.aio counterpart."""
    addr = daemon.addr
    # Status throughput against a running job
    job, _ = run_async(
        None,
        rund_load.start_jobs,
        addr,
        ctx,
        ("sleep", "600"),
        clients=1,
        count=0,
        max_seconds=10,
        warmup=1,
    )
    with prof.record("status", daemon):
        st, info = run_async(
            daemon,
            rund_load.statuses,
            addr,
            ctx,
            job.job_ids,
            clients=sz.clients,
            count=sz.status_count,
            max_seconds=sz.status_seconds,
        )
    report.status_rows(st, info, sz.clients)
    run_async(None, rund_load.stop_all, addr, ctx, job.job_ids)
    bench_grpc_aio_status(report, work, sz)


def bench_grpc_aio_status(report: Report, work: Path, sz: Sizes) -> None:
    """Status on a minimal grpc.aio server, loaded as the daemon's Status was
    (same client, connections and counts): the counterpart of its row."""
    counterpart = grpc_aio.spawn(grpc_aio.make_pki(work / "tls-p384"))
    try:
        st, info = run_async(
            counterpart,
            rund_load.statuses,
            counterpart.addr,
            Pki(work / "tls-p384").client_context(),
            ["01ARZ3NDEKTSV4RRFFQ69G5FAV"],
            clients=sz.clients,
            count=sz.status_count,
            max_seconds=sz.status_seconds,
        )
    finally:
        counterpart.stop()
    report.grpc_aio_status(st, info, sz.clients)


def bench_status(report: Report, pki: Pki, work: Path, sz: Sizes, prof: Profiler) -> None:
    daemon = spawn_daemon("status", pki, work)
    try:
        bench_status_rows(report, daemon, pki.client_context(), work, sz, prof)
    finally:
        report.daemon_exit("status", daemon.stop())


def bench_default(report: Report, pki: Pki, work: Path, sz: Sizes, prof: Profiler) -> None:
    ctx = pki.client_context()
    daemon = spawn_daemon("default", pki, work)
    try:
        addr = daemon.addr
        # Start latency, one warm channel, sequential
        with prof.record("start", daemon):
            seq, info = run_async(
                daemon,
                rund_load.start_jobs,
                addr,
                ctx,
                ("true",),
                clients=1,
                count=sz.start_seq,
                max_seconds=120,
            )
        report.start_rows("default", "1 client", seq, info)
        conc, info = run_async(
            daemon,
            rund_load.start_jobs,
            addr,
            ctx,
            ("true",),
            clients=sz.clients,
            count=sz.start_conc,
            max_seconds=120,
        )
        report.start_rows("default", f"{sz.clients} clients", conc, info)

        bench_status_rows(report, daemon, ctx, work, sz, prof)

        # Log throughput
        with prof.record("log1", daemon):
            one, info = run_async(
                daemon,
                rund_load.stream_log,
                addr,
                ctx,
                sz.log_size,
                subscribers=1,
                max_seconds=sz.log_seconds,
            )
        report.log_rows(one, info, sz.log_size)
        with prof.record("log32", daemon):
            many, info = run_async(
                daemon,
                rund_load.stream_log,
                addr,
                ctx,
                sz.log_size,
                subscribers=sz.subscribers,
                max_seconds=sz.log_seconds,
            )
        report.log_rows(many, info, sz.log_size)
        # The Log phases left gigabytes of journal being written back to disk:
        # flush them first, or their writeback throttles this job's writes.
        os.sync()
        nosub, info = run_async(
            daemon, rund_load.job_write_time, addr, ctx, sz.log_size, max_seconds=sz.log_seconds
        )
        report.job_write_row(nosub, info, sz.log_size)
        try:  # the finished job's log replayed from the journal: no recorder in the way
            for n in (1, sz.subscribers):
                replay, info = run_async(
                    daemon,
                    rund_load.stream_log,
                    addr,
                    ctx,
                    sz.log_size,
                    subscribers=n,
                    max_seconds=sz.log_seconds,
                    job_id=str(nosub["job_id"]),
                )
                report.log_rows(replay, info, sz.log_size, replay=True)
        except Exception as error:
            report.notes.append(f"log replay failed: {error!r}")

    finally:
        report.daemon_exit("default", daemon.stop())


def bench_output(report: Report, pki: Pki, work: Path, sz: Sizes, prof: Profiler) -> None:
    """The job-writes-to-stdout row beside head|cat, in alternating rounds so
    that a loaded machine's drift hits both alike."""
    ctx = pki.client_context()
    daemon = spawn_daemon("output", pki, work)
    size = sz.log_size
    pipes: list[float] = []
    jobs: list[tuple[dict[str, Any], dict[str, float]]] = []
    try:
        with prof.record("output", daemon):
            for _ in range(max(3, sz.pipe_repeat)):
                pipes.extend(
                    baselines.shell_seconds(f"head -c {size} /dev/zero | cat > /dev/null", 1)
                )
                os.sync()  # the previous round's journal, written back first
                jobs.append(
                    run_async(
                        daemon,
                        rund_load.job_write_time,
                        daemon.addr,
                        ctx,
                        size,
                        max_seconds=sz.log_seconds,
                    )
                )
        null = baselines.shell_seconds(f"head -c {size} /dev/zero > /dev/null", 1)
        report.pipe_floor(size, median(pipes), median(null))
        jobs.sort(key=lambda round_: float(round_[0].get("run_seconds") or "inf"))
        result, info = jobs[len(jobs) // 2]
        report.job_write_row(result, info, size)
        report.notes.append(
            "output: job run_s "
            + ", ".join(f"{float(r.get('run_seconds') or 0):.3f}" for r, _ in jobs)
            + "; head|cat s "
            + ", ".join(f"{p:.3f}" for p in pipes)
        )
    finally:
        report.daemon_exit("output", daemon.stop())


def bench_finished(report: Report, label: str, daemon: Daemon, ctx: Any, sz: Sizes) -> None:
    """RSS per finished job: start `true` N times (8 clients), wait for them to end."""
    before = daemon.rss_kib()
    lat, info = run_async(
        daemon,
        rund_load.start_jobs,
        daemon.addr,
        ctx,
        ("true",),
        clients=sz.clients,
        count=sz.finished_jobs,
        max_seconds=sz.finished_seconds,
        warmup=0,
    )
    run_async(None, rund_load.wait_ended, daemon.addr, ctx, lat.job_ids[-sz.clients :], 30)
    time.sleep(1.0)
    after = daemon.rss_kib()
    report.finished_row(label, len(lat.job_ids), before, after, lat, info)


def bench_plain(report: Report, pki: Pki, work: Path, sz: Sizes) -> None:
    ctx = pki.client_context()
    daemon = spawn_daemon(
        "plain", pki, work, "--no-namespaces", "--default-profile", "host", "--no-cgroups"
    )
    try:
        seq, info = run_async(
            daemon,
            rund_load.start_jobs,
            daemon.addr,
            ctx,
            ("true",),
            clients=1,
            count=sz.start_seq,
            max_seconds=120,
        )
        report.start_rows("plain", "1 client", seq, info)
        conc, info = run_async(
            daemon,
            rund_load.start_jobs,
            daemon.addr,
            ctx,
            ("true",),
            clients=sz.clients,
            count=sz.start_conc,
            max_seconds=120,
        )
        report.start_rows("plain", f"{sz.clients} clients", conc, info)
        bench_finished(report, "plain", daemon, ctx, sz)
    finally:
        report.daemon_exit("plain", daemon.stop())


def bench_profiles(report: Report, pki: Pki, work: Path, sz: Sizes) -> None:
    """Start p50 of a contained job against a host job: the cost of narrowing
    capabilities and installing the seccomp filter. Rounds alternate between
    the two daemons so that the machine's drift hits both alike."""
    ctx = pki.client_context()
    daemons = {
        "contained": spawn_daemon("contained", pki, work),
        "host": spawn_daemon("host", pki, work, "--default-profile", "host"),
    }
    samples: dict[str, list[Any]] = {name: [] for name in daemons}
    try:
        for _ in range(4):
            for name, daemon in daemons.items():
                seq, info = run_async(
                    daemon,
                    rund_load.start_jobs,
                    daemon.addr,
                    ctx,
                    ("true",),
                    clients=1,
                    count=max(1, sz.start_seq // 4),
                    max_seconds=60,
                )
                samples[name].append((seq, info))
        for name, rounds in samples.items():
            merged = rund_load.Latencies(
                samples_ms=[ms for seq, _ in rounds for ms in seq.samples_ms],
                elapsed_s=sum(seq.elapsed_s for seq, _ in rounds),
                errors=sum(seq.errors for seq, _ in rounds),
                truncated=any(seq.truncated for seq, _ in rounds),
            )
            report.start_rows(name, "1 client", merged, rounds[-1][1])
    finally:
        for name, daemon in daemons.items():
            report.daemon_exit(name, daemon.stop())


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def bench_scale(report: Report, pki: Pki, work: Path, sz: Sizes, prof: Profiler) -> None:
    ctx = pki.client_context()
    daemon = spawn_daemon("scale", pki, work)
    running: list[str] = []
    try:
        bench_finished(report, "default", daemon, ctx, sz)

        # N jobs running at once
        want = sz.running_jobs
        avail = mem_available_kib()
        if avail and avail < want * 16 * 1024:  # ~2 interpreters + sleep per job, with margin
            want = max(10, avail // (16 * 1024))
            report.notes.append(f"scale: only {want} running jobs (MemAvailable {avail} KiB)")
        before = daemon.rss_kib()
        mem_before = mem_available_kib()
        started, info = run_async(
            daemon,
            rund_load.start_jobs,
            daemon.addr,
            ctx,
            ("sleep", "600"),
            clients=sz.clients,
            count=want,
            max_seconds=300,
            warmup=0,
        )
        running = started.job_ids
        time.sleep(1.0)
        after = daemon.rss_kib()
        mem_after = mem_available_kib()
        report.running_rows(
            len(running),
            before,
            after,
            started,
            info,
            (mem_before - mem_after) / max(1, len(running)),
        )
        with prof.record("status-scale", daemon):
            st, info = run_async(
                daemon,
                rund_load.statuses,
                daemon.addr,
                ctx,
                running,
                clients=sz.clients,
                count=sz.status_count,
                max_seconds=sz.status_seconds,
            )
        probe, _ = run_async(daemon, rund_load.first_log_chunk, daemon.addr, ctx, 10)
        report.scale_rows(len(running), st, info, probe)
        stopped, info = run_async(
            daemon,
            rund_load.stop_all,
            daemon.addr,
            ctx,
            running,
            clients=sz.clients,
            max_seconds=120,
        )
        running = []
        report.stop_row(stopped, info)
    finally:
        report.daemon_exit("scale", daemon.stop(timeout=120))


def bench_floor(report: Report, sz: Sizes) -> None:
    report.spawn_floor(baselines.spawn_true(sz.spawn_runs))
    size = sz.log_size
    pipe = baselines.shell_seconds(f"head -c {size} /dev/zero | cat > /dev/null", sz.pipe_repeat)
    null = baselines.shell_seconds(f"head -c {size} /dev/zero > /dev/null", sz.pipe_repeat)
    report.pipe_floor(size, median(pipe), median(null))


SETTLE = 0.3
"""Seconds between two timed commands of the CLI phase: what one leaves to
finish after its exit (sshd's session teardown, the daemon recording a job's
end with an fsync) would otherwise run beside the next one's start."""


def bench_cli(report: Report, pki: Pki, work: Path, sz: Sizes) -> None:
    """The CLI as a user runs it, whole process, on a daemon of its own,
    beside ``ssh host true`` in alternating rounds (A B A B ...), so that what
    the machine is doing at the time (the journals the Log phases left to
    write back, say) weighs on both alike. A running job's Status."""
    # As installed: its modules compiled (an editable install run with
    # PYTHONDONTWRITEBYTECODE would compile every module from source in every
    # run, which no installed copy does).
    compileall.compile_dir(Path(rund_trio.__file__).parent, quiet=1)
    daemon = spawn_daemon("cli", pki, work)
    try:
        with baselines.running_sshd(work) as sshd:
            rund = rund_executable()
            common = ["--addr", daemon.addr, *pki.client_args()]
            job_id = subprocess.run(
                [rund, "client", "start", *common, "--", "sleep", "600"],
                capture_output=True,
                text=True,
                env=clean_env(),
                timeout=30,
            ).stdout.strip()
            argvs = {
                "start": [rund, "client", "start", *common, "--", "true"],
                "run": [rund, "client", "run", *common, "--", "true"],
                "status": [rund, "client", "status", *common, job_id],
            }
            samples: dict[str, list[float]] = {action: [] for action in argvs}
            failures = dict.fromkeys(argvs, 0)
            ssh: list[float] = []
            ssh_failures = 0
            for _ in range(sz.cli_runs + 1):  # the first round warms up
                for action, argv in argvs.items():
                    time.sleep(SETTLE)
                    times, failed = baselines.wall_times(argv, 1, env=clean_env())
                    samples[action] += times
                    failures[action] += failed
                if sshd is not None:
                    time.sleep(SETTLE)
                    times, failed = baselines.wall_times(sshd.argv("true"), 1)
                    ssh += times
                    ssh_failures += failed
            if ssh:
                report.ssh_true_paired(ssh[1:], ssh_failures)
            for action in argvs:
                report.cli_row(action, samples[action][1:], failures[action])
            subprocess.run(
                [rund, "client", "stop", *common, job_id],
                capture_output=True,
                env=clean_env(),
                timeout=30,
            )
    finally:
        report.daemon_exit("cli", daemon.stop())


def bench_ssh(report: Report, work: Path, sz: Sizes) -> None:
    with baselines.running_sshd(work) as sshd:
        if sshd is None:
            report.notes.append("OpenSSH: unavailable, its rows are missing")
            return
        samples, failures = baselines.wall_times(sshd.argv("true"), sz.ssh_runs)
        report.ssh_true(samples, failures)
        got, seconds, cut = baselines.read_stream(
            sshd.argv("head", "-c", sz.log_size, "/dev/zero"), sz.log_seconds
        )
        report.ssh_stream(sz.log_size, got, seconds, cut)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, finishes in under 2 minutes"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="directory for results.json and chart.png (default: bench/results)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[
            "floor",
            "ssh",
            "default",
            "cli",
            "plain",
            "scale",
            "retained",
            "io",
            "output",
            "not-found",
            "status",
            "profiles",
            "contained",
        ],
        help="run only these phases (repeatable; default: all but not-found and contained)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the daemon with py-spy (start, status, log phases) into "
        "OUT/profile-*.txt and print the hottest functions",
    )
    args = parser.parse_args(argv)
    sz = QUICK if args.quick else FULL
    # The bench's subscribers stand in for `rund-trio client log`, which does this.
    keep_stream_buffers_in_heap()
    phases = args.only or ["floor", "ssh", "default", "cli", "plain", "scale", "retained", "io"]
    args.out.mkdir(parents=True, exist_ok=True)

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    report = Report(mode="quick" if args.quick else "full", sizes=sz.__dict__)
    report.meta.update(
        {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "mem_total_kib": mem_available_kib() and _mem_total(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "loadavg_at_start": loadavg(),
        }
    )
    prof = Profiler(args.profile, args.out)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rund-bench-") as tmp:
        work = Path(tmp)
        pki = Pki.create(work / "tls")
        steps = {
            "floor": lambda: bench_floor(report, sz),
            "ssh": lambda: bench_ssh(report, work, sz),
            "default": lambda: bench_default(report, pki, work, sz, prof),
            "cli": lambda: bench_cli(report, pki, work, sz),
            "plain": lambda: bench_plain(report, pki, work, sz),
            "scale": lambda: bench_scale(report, pki, work, sz, prof),
            "retained": lambda: retained.bench_retained(report, pki, work, sz.retained_jobs),
            "output": lambda: bench_output(report, pki, work, sz, prof),
            "status": lambda: bench_status(report, pki, work, sz, prof),
            "profiles": lambda: bench_profiles(report, pki, work, sz),
            "io": lambda: job_io.bench_io(report, pki, work, sz.log_size, sz.keystrokes),
            "not-found": lambda: not_found.bench_not_found(
                report, pki, work, sz.status_count, sz.status_seconds
            ),
            "contained": lambda: contained.bench_contained(report, sz.start_seq),
        }
        for name in phases:
            t0 = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            steps[name]()
            report.meta[f"phase_{name}_s"] = round(time.perf_counter() - t0, 1)
    report.meta["total_s"] = round(time.perf_counter() - began, 1)
    report.meta["loadavg_at_end"] = loadavg()
    report.finish()
    table = report.table() + "".join(f"\nnote: {note}" for note in report.notes)
    print(table)
    (args.out / "table.txt").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    chart = report.chart(args.out / "chart.png")
    print(f"\nwrote {args.out / 'table.txt'}, results.json" + (f" and {chart}" if chart else ""))
    if prof.files:
        from bench.profile import summarize

        for name, path in prof.files.items():
            print(summarize(name, path))
    return 0


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1])

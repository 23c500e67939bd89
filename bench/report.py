"""The one table: every figure with its target (met / missed by how much) and
its counterpart (the machine's floor or OpenSSH) as a ratio; also as JSON and
a PNG chart."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import size_bytes
from bench.rund_load import Latencies, Stream
from bench.stats import cpu_note, summary


@dataclass
class Row:
    section: str
    metric: str
    value: float | None
    unit: str
    better: str = "lower"  # or "higher"
    target: float | None = None
    target_ratio: float | None = None  # target = target_ratio * counterpart value
    counterpart: str | None = None  # key of a floor/ssh figure
    counterpart_value: float | None = None
    ratio: float | None = None  # value / counterpart value
    verdict: str = ""
    note: str = ""
    key: str = ""


FLOOR_NAMES = {
    "spawn_p50": "fork/exec p50",
    "spawn_p99": "fork/exec p99",
    "pipe_s": "head|cat",
    "null_s": "head>/dev/null",
    "pipe_mb_s": "local pipe",
    "ssh_true_ms": "ssh true",
    "ssh_true_cli_ms": "ssh true (in turn)",
    "ssh_mb_s": "ssh stream",
    "grpc_aio_status_rate": "grpc.aio",
    "ssh_key_p50": "ssh -tt p50",
    "ssh_key_p99": "ssh -tt p99",
    "ssh_stdin_mb_s": "ssh stdin",
}


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


@dataclass
class Report:
    mode: str
    sizes: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    floor: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(
        self, key: str, section: str, metric: str, value: float | None, unit: str, **kw: Any
    ) -> Row:
        row = Row(section, metric, value, unit, key=key, **kw)
        self.rows.append(row)
        return row

    # ------------------------------------------------------------ counterparts

    def spawn_floor(self, samples: list[float]) -> None:
        s = summary(samples)
        self.raw["spawn_true_ms"] = s
        self.floor.update(spawn_p50=s["p50"], spawn_p99=s["p99"])
        self.add("floor.spawn.p50", "floor", "posix_spawn+wait /bin/true p50", s["p50"], "ms")
        self.add("floor.spawn.p99", "floor", "posix_spawn+wait /bin/true p99", s["p99"], "ms")

    def pipe_floor(self, size: str, pipe_s: float, null_s: float) -> None:
        mb = size_bytes(size) / 1e6
        self.floor.update(pipe_s=pipe_s, null_s=null_s, pipe_mb_s=mb / pipe_s)
        self.add(
            "floor.pipe.s", "floor", f"head -c {size} /dev/zero | cat > /dev/null", pipe_s, "s"
        )
        self.add(
            "floor.pipe.mbs",
            "floor",
            "  the same, throughput",
            mb / pipe_s,
            "MB/s",
            better="higher",
        )
        self.add("floor.null.s", "floor", f"head -c {size} /dev/zero > /dev/null", null_s, "s")

    def ssh_true(self, samples: list[float], failures: int) -> None:
        s = summary(samples)
        self.raw["ssh_true_ms"] = s
        self.floor["ssh_true_ms"] = s["p50"]
        self.add(
            "ssh.true",
            "openssh",
            "ssh root@127.0.0.1 true, median",
            s["p50"],
            "ms",
            note=f"n={s['n']}" + (f", {failures} failed" if failures else ""),
        )

    def ssh_true_paired(self, samples: list[float], failures: int) -> None:
        """``ssh true`` measured in turn with the CLI rows: their counterpart."""
        s = summary(samples)
        self.raw["ssh_true_cli_ms"] = s
        self.floor["ssh_true_cli_ms"] = s["p50"]
        self.add(
            "ssh.true.cli",
            "client CLI",
            "ssh root@127.0.0.1 true, median, in turn with the CLI",
            s["p50"],
            "ms",
            note=f"n={s['n']}" + (f", {failures} failed" if failures else ""),
        )

    def ssh_stream(self, size: str, got: int, seconds: float, cut: bool) -> None:
        rate = got / seconds / 1e6
        self.floor["ssh_mb_s"] = rate
        self.add(
            "ssh.stream",
            "openssh",
            f"ssh ... head -c {size} /dev/zero",
            rate,
            "MB/s",
            better="higher",
            note=f"{got / 1e6:,.0f} MB in {seconds:.1f} s" + (" (time bound hit)" if cut else ""),
        )

    # --------------------------------------------------------------- rund-trio

    def start_rows(self, daemon: str, how: str, lat: Latencies, info: dict[str, float]) -> None:

        s = summary(lat.samples_ms)
        self.raw[f"start.{daemon}.{how}"] = {
            **s,
            "rate_per_s": lat.rate,
            "errors": lat.errors,
            "truncated": lat.truncated,
            **info,
        }
        label = {
            "default": "default settings",
            "contained": "contained jobs (the default profile)",
            "host": "--default-profile host",
        }.get(daemon, "--no-namespaces --default-profile host --no-cgroups")
        note = f"n={s['n']}, {lat.rate:.0f} starts/s, {cpu_note(info)}"
        if lat.errors or lat.truncated:
            note += f", {lat.errors} errors" + (", time bound hit" if lat.truncated else "")
        self.add(
            f"start.{daemon}.{how}.p50",
            f"start ({label})",
            f"Start `true`, {how}, p50",
            s.get("p50"),
            "ms",
            target=5,
            counterpart="spawn_p50",
            note=note,
        )
        self.add(
            f"start.{daemon}.{how}.p99",
            f"start ({label})",
            f"Start `true`, {how}, p99",
            s.get("p99"),
            "ms",
            target=20,
            counterpart="spawn_p99",
        )

    def status_rows(self, lat: Latencies, info: dict[str, float], clients: int) -> None:

        s = summary(lat.samples_ms)
        self.raw["status"] = {**s, "rate_per_s": lat.rate, "errors": lat.errors, **info}
        self.add(
            "status.rate",
            "status",
            f"Status RPC/s, {clients} clients",
            lat.rate,
            "RPC/s",
            better="higher",
            target_ratio=1.0,
            counterpart="grpc_aio_status_rate",
            note=f"n={s['n']} in {lat.elapsed_s:.1f} s, {cpu_note(info)}",
        )
        self.add("status.p50", "status", "Status p50", s.get("p50"), "ms")
        self.add("status.p99", "status", "Status p99", s.get("p99"), "ms", target=10)

    def grpc_aio_status(self, lat: Latencies, info: dict[str, float], clients: int) -> None:

        s = summary(lat.samples_ms)
        self.raw["grpc_aio_status"] = {**s, "rate_per_s": lat.rate, "errors": lat.errors, **info}
        self.floor["grpc_aio_status_rate"] = lat.rate
        self.add(
            "grpc_aio.status.rate",
            "grpc.aio",
            f"grpc.aio Status RPC/s, {clients} clients (same client, same mTLS)",
            lat.rate,
            "RPC/s",
            better="higher",
            note=f"n={s['n']} in {lat.elapsed_s:.1f} s, errors={lat.errors}, {cpu_note(info)}",
        )

    def log_rows(self, st: Stream, info: dict[str, float], size: str, replay: bool = False) -> None:

        kind = "replay" if replay else "live"
        self.raw[f"log.{kind}.{st.subscribers}"] = {
            "bytes_each": st.bytes_each,
            "seconds_each": st.seconds_each,
            "elapsed_s": st.elapsed_s,
            "truncated": st.truncated,
            "job": st.job_status,
            "connect_s": st.connect_s,
            "close_s": st.close_s,
            **info,
        }
        total = sum(st.bytes_each)
        note = (
            f"{total / 1e6:,.0f} MB in {st.elapsed_s:.1f} s"
            + (" (time bound hit)" if st.truncated else "")
            + f", {cpu_note(info)}"
        )
        if replay:
            self.add(
                f"log.replay.{st.subscribers}",
                "log",
                f"  replay of the finished job, {st.subscribers} subscriber(s)",
                st.aggregate_mb_s,
                "MB/s",
                better="higher",
                note=note,
            )
        elif st.subscribers == 1:
            self.add(
                "log.1",
                "log",
                f"Log of `head -c {size}`, 1 subscriber",
                st.aggregate_mb_s,
                "MB/s",
                better="higher",
                target=300,
                counterpart="ssh_mb_s",
                note=note,
            )
        else:
            per = st.per_subscriber_mb_s
            note += f", per subscriber {min(per):.1f}-{max(per):.1f} MB/s"
            out = st.job_status.get("output_bytes")
            if out is not None and st.job_status.get("run_seconds"):
                note += (
                    f"; the job itself wrote {int(out) / 1e6:,.0f} MB in "
                    f"{st.job_status['run_seconds']:.1f} s"
                )
            self.add(
                f"log.{st.subscribers}",
                "log",
                f"Log, {st.subscribers} subscribers, aggregate",
                st.aggregate_mb_s,
                "MB/s",
                better="higher",
                target=300,
                counterpart="pipe_mb_s",
                note=note,
            )

    def job_write_row(self, result: dict[str, Any], info: dict[str, float], size: str) -> None:

        self.raw["job_write"] = {**result, **info}
        note = (
            f"Start→Status exited {fmt(result.get('start_to_seen_exited_s'), 's')}, "
            f"dropped {result.get('output_dropped_bytes', 0):,} B, {cpu_note(info)}"
        )
        self.add(
            "log.nosub",
            "log",
            f"job writes {size} to stdout, no subscriber",
            result.get("run_seconds"),
            "s",
            target_ratio=1.5,
            counterpart="pipe_s",
            note=note,
        )

    def cli_row(self, action: str, samples: list[float], failures: int) -> None:
        s = summary(samples)
        self.raw[f"cli.{action}"] = {**s, "failures": failures}
        shown = "status ID" if action == "status" else f"{action} -- true"
        self.add(
            f"cli.{action}",
            "client CLI",
            f"`rund-trio client {shown}`, median",
            s["p50"],
            "ms",
            target=150 if action == "start" else None,
            target_ratio=0.35 if action == "status" else None,
            counterpart="ssh_true_cli_ms" if "ssh_true_cli_ms" in self.floor else "ssh_true_ms",
            note=f"n={s['n']}" + (f", {failures} failed" if failures else ""),
        )

    def finished_row(
        self,
        daemon: str,
        count: int,
        before: int,
        after: int,
        lat: Latencies,
        info: dict[str, float],
    ) -> None:

        per = (after - before) / count if count else None
        self.raw[f"finished.{daemon}"] = {
            "count": count,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "start_rate": lat.rate,
            "truncated": lat.truncated,
            **info,
        }
        self.add(
            f"scale.finished.{daemon}",
            "scale",
            f"daemon RSS per finished job ({daemon})",
            per,
            "KiB",
            target=64,
            note=f"{count:,} jobs, RSS {before / 1024:.0f}→{after / 1024:.0f} MiB, "
            f"{lat.rate:.0f} starts/s, {cpu_note(info)}"
            + (" (time bound hit)" if lat.truncated else ""),
        )

    def running_rows(
        self,
        count: int,
        before: int,
        after: int,
        lat: Latencies,
        info: dict[str, float],
        host_kib_per_job: float,
    ) -> None:

        self.raw["running"] = {
            "count": count,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "start_latency_ms": summary(lat.samples_ms),
            "host_mem_kib_per_job": host_kib_per_job,
            **info,
        }
        self.add(
            "scale.running.rss",
            "scale",
            f"daemon RSS per running job ({count:,} running)",
            (after - before) / max(1, count),
            "KiB",
            note=f"RSS {before / 1024:.0f}→{after / 1024:.0f} MiB; host memory "
            f"{host_kib_per_job / 1024:.1f} MiB/job; started in {lat.elapsed_s:.1f} s "
            f"({lat.rate:.0f}/s), {cpu_note(info)}",
        )

    def scale_rows(
        self, count: int, lat: Latencies, info: dict[str, float], probe: dict[str, Any]
    ) -> None:

        s = summary(lat.samples_ms)
        self.raw["scale.status"] = {**s, "rate_per_s": lat.rate, **info, "probe": probe}
        self.add(
            "scale.status.p99",
            "scale",
            f"Status p99, {count:,} jobs running",
            s.get("p99"),
            "ms",
            target=50,
            note=f"n={s['n']}, {lat.rate:.0f} RPC/s, p50 {fmt(s.get('p50'), 'ms')}, "
            f"{cpu_note(info)}",
        )
        first = probe.get("log_first_chunk_ms")
        self.add(
            "scale.log",
            "scale",
            f"Log first chunk, {count:,} jobs running",
            first,
            "ms",
            note="answered" if first is not None else "NO ANSWER within 10 s",
        )

    def stop_row(self, lat: Latencies, info: dict[str, float]) -> None:

        s = summary(lat.samples_ms)
        self.raw["scale.stop"] = {**s, "rate_per_s": lat.rate, "errors": lat.errors, **info}
        self.add(
            "scale.stop",
            "scale",
            f"Stop all {s['n']:,} (8 clients), p99",
            s.get("p99"),
            "ms",
            note=f"{lat.rate:.0f} stops/s, {cpu_note(info)}",
        )

    def daemon_exit(self, name: str, code: int | None) -> None:
        self.meta[f"daemon_{name}_exit"] = code
        if code != 0:
            self.notes.append(f"daemon {name} exited {code}")

    # ---------------------------------------------------------------- results

    def finish(self) -> None:
        by_key = {r.key: r for r in self.rows}
        for row in list(self.rows):
            if row.counterpart and row.counterpart in self.floor and row.value is not None:
                row.counterpart_value = self.floor[row.counterpart]
                row.ratio = row.value / row.counterpart_value if row.counterpart_value else None
            if row.target_ratio is not None and row.counterpart_value is not None:
                row.target = row.target_ratio * row.counterpart_value
        # Start p50 within 10x of bare fork/exec
        for key in ("start.default.1 client.p50", "start.plain.1 client.p50"):
            row = by_key.get(key)
            if row is not None and row.ratio is not None:
                index = self.rows.index(by_key[key.replace(".p50", ".p99")]) + 1
                extra = Row(
                    row.section,
                    "  Start p50 / fork-exec p50",
                    row.ratio,
                    "x",
                    target=10,
                    key=key.replace(".p50", ".vs_fork"),
                )
                self.rows.insert(index, extra)
        for row in self.rows:
            row.verdict = verdict(row)

    def table(self) -> str:
        headers = (
            "section",
            "measurement",
            "rund-trio",
            "target",
            "verdict",
            "counterpart",
            "ratio",
            "notes",
        )
        lines = []
        for r in self.rows:
            if r.target is None:
                target = ""
            elif r.target_ratio is not None:
                sign = "<=" if r.better == "lower" else ">="
                target = f"{sign} {fmt(r.target, r.unit)} ({r.target_ratio}x)"
            else:
                target = ("<= " if r.better == "lower" else ">= ") + fmt(r.target, r.unit)
            counterpart = (
                f"{FLOOR_NAMES[r.counterpart]} {fmt(r.counterpart_value, _unit(r))}"
                if r.counterpart_value is not None and r.counterpart
                else ""
            )
            lines.append(
                (
                    r.section,
                    r.metric,
                    fmt(r.value, r.unit),
                    target,
                    r.verdict,
                    counterpart,
                    _ratio(r.ratio),
                    r.note,
                )
            )
        widths = [
            max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
            for i, h in enumerate(headers)
        ]
        widths[-1] = len(headers[-1])

        def render(cells: tuple[str, ...]) -> str:
            return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        title = (
            f"rund-trio bench ({self.mode}) — {self.meta.get('cpus')} CPUs, "
            f"kernel {self.meta.get('kernel')}, Python {self.meta.get('python')}, "
            f"{self.meta.get('total_s')} s, load average {self.meta.get('loadavg_at_start')}"
            f" at start, {self.meta.get('loadavg_at_end')} at end"
        )
        out = [title, render(headers), "-+-".join("-" * w for w in widths)]
        previous = None
        for line in lines:
            cells = ("" if line[0] == previous else line[0], *line[1:])
            previous = line[0]
            out.append(render(cells))
        return "\n".join(out)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "meta": self.meta,
            "sizes": self.sizes,
            "rows": [asdict(r) for r in self.rows],
            "counterparts": self.floor,
            "raw": self.raw,
            "notes": self.notes,
        }

    def chart(self, path: Path) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.notes.append("no matplotlib: chart.png not drawn (pip install matplotlib)")
            return None
        targeted = [r for r in self.rows if r.target and r.value]
        compared = [r for r in self.rows if r.ratio and r.counterpart and r.unit != "x"]
        fig, (left, right) = plt.subplots(
            1, 2, figsize=(16, 0.42 * max(len(targeted), len(compared)) + 2.2)
        )
        # left: headroom against the target, >1 = met (log scale)
        heads = [headroom(r) for r in targeted]
        labels = [f"{r.section}: {r.metric.strip()}" for r in targeted]
        colors = ["tab:green" if h >= 1 else "tab:red" for h in heads]
        left.barh(range(len(heads)), heads, color=colors)
        left.set_yticks(range(len(heads)), labels, fontsize=8)
        left.invert_yaxis()
        left.set_xscale("log")
        left.axvline(1, color="black", linewidth=1)
        for i, (h, r) in enumerate(zip(heads, targeted, strict=True)):
            left.text(h, i, f" {fmt(r.value, r.unit)}", va="center", fontsize=7)
        left.set_title(
            "against the issue's targets (bar ≥ 1: met; < 1: missed by that factor)", fontsize=9
        )
        left.set_xlabel("headroom (target/value for ≤ targets, value/target for ≥ targets)")
        # right: cost relative to the counterpart (lower is better for rund-trio)
        costs = [r.ratio if r.better == "lower" else 1 / r.ratio for r in compared]
        right.barh(range(len(costs)), costs, color="tab:blue")
        right.set_yticks(
            range(len(costs)),
            [
                f"{r.metric.strip()} vs {FLOOR_NAMES[r.counterpart]}"  # type: ignore[index]
                for r in compared
            ],
            fontsize=8,
        )
        right.invert_yaxis()
        right.set_xscale("log")
        right.axvline(1, color="black", linewidth=1)
        for i, c in enumerate(costs):
            right.text(c, i, f" {c:.1f}x", va="center", fontsize=7)
        right.set_title("rund-trio cost relative to its counterpart (1 = as fast)", fontsize=9)
        if not compared:
            right.text(
                0.5,
                0.5,
                "no counterparts measured in this run",
                ha="center",
                transform=right.transAxes,
            )
        fig.suptitle(f"rund-trio bench ({self.mode}), {self.meta.get('date', '')}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _unit(row: Row) -> str:
    return {
        "spawn_p50": "ms",
        "spawn_p99": "ms",
        "pipe_s": "s",
        "null_s": "s",
        "pipe_mb_s": "MB/s",
        "ssh_true_ms": "ms",
        "ssh_true_cli_ms": "ms",
        "ssh_mb_s": "MB/s",
        "grpc_aio_status_rate": "RPC/s",
    }.get(row.counterpart or "", row.unit)


def headroom(row: Row) -> float:
    assert row.value is not None and row.target is not None
    if row.better == "lower":
        return row.target / row.value if row.value else math.inf
    return row.value / row.target


def verdict(row: Row) -> str:
    if row.target is None:
        return ""
    if row.value is None or (isinstance(row.value, float) and math.isnan(row.value)):
        return "no data"
    h = headroom(row)
    if h >= 1:
        return "met"
    if row.better == "lower":
        return f"MISSED by {row.value / row.target:.1f}x"
    return f"MISSED ({h:.2f}x of target)"

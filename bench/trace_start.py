"""``python -m bench.trace_start [COUNT]``: where one contained Start's time goes.

Runs a default daemon (contained jobs, a cgroup leaf each) with
``RUND_TRACE_START`` set (``rund_trio.isolation.trace``), makes ``COUNT``
sequential Starts of ``true`` from one client (after a warm-up), and prints
for every traced step the median time at which it is reached, counted from
the client's call, and the median gap to the step before it: the daemon's
handling, the fork server, the job's set-up processes and the status pipe's
end of file, on one clock. A figure for finding what to shave, not a
benchmark: the marks cost a write each.
"""

from __future__ import annotations

import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.daemon import Pki, spawn_daemon
from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.isolation import trace

WARMUP = 5
CALL = "client call"
RETURNED = "client returned"


async def _starts(addr: str, ctx: object, count: int) -> None:
    request = pb.JobStartRequest(name="true")
    async with RundClient.connect(addr, ctx) as client:  # type: ignore[arg-type]
        for _ in range(WARMUP + count):
            trace.mark(CALL)
            await client.start(request)
            trace.mark(RETURNED)
            await trio.sleep(0.005)  # let the job end and its cleanup pass


def _steps(lines: list[str]) -> list[list[tuple[int, str]]]:
    """The marks of each Start, from its client call to the next one."""
    runs: list[list[tuple[int, str]]] = []
    for line in sorted(lines, key=lambda line: int(line.split(None, 1)[0])):
        ns, _pid, step = line.split(None, 2)
        if step == CALL:
            runs.append([])
        if runs:
            runs[-1].append((int(ns), step))
    return runs[WARMUP:]


def report(lines: list[str]) -> str:
    at: dict[str, list[float]] = collections.defaultdict(list)
    for run in _steps(lines):
        begin = run[0][0]
        end = next((ns for ns, step in run if step == RETURNED), None)
        for ns, step in run:
            if (end is not None and ns <= end) or step.startswith(("job", "init", "helper")):
                at[step].append((ns - begin) / 1e6)
    medians = {step: statistics.median(values) for step, values in at.items()}
    out = [f"{'step':28} {'at (ms)':>8} {'gap':>7}  n"]
    previous = 0.0
    for step in sorted(medians, key=lambda step: medians[step]):
        out.append(
            f"{step:28} {medians[step]:8.3f} {medians[step] - previous:7.3f}  {len(at[step])}"
        )
        previous = medians[step]
    return "\n".join(out)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory(prefix="rund-trace-") as tmp:
        work = Path(tmp)
        path = work / "trace"
        trace.enable(str(path))
        pki = Pki.create(work / "pki")
        daemon = spawn_daemon("trace", pki, work, env={trace.ENV: str(path)})
        try:
            begin = time.perf_counter()
            trio.run(_starts, daemon.addr, pki.client_context(), count)
            elapsed = time.perf_counter() - begin
        finally:
            daemon.stop()
        print(report(path.read_text().splitlines()))
        print(f"{count} Starts (+{WARMUP} warm-up) in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

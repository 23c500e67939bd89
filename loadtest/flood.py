"""``just load --flood N``: a legitimate client's Start latency while a flood
of TCP connections that never begin their TLS handshake hits the daemon.

A separate process (so that it does not share this one's interpreter) keeps
up to N connections open to the daemon from other loopback addresses for
``--flood-seconds``, replacing those the daemon closes at most
``REOPEN_PER_SECOND`` a second; it sends nothing. Meanwhile, and before it
for the unloaded baseline, a client from 127.0.0.1 times Start (of ``true``)
on a connection it keeps, and connect + Start on a new connection each time.
Bounded in count and time, loopback only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.daemon import Pki, spawn_daemon
from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RundError

REOPEN_PER_SECOND = 5000
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SAMPLES = 40


def flood(
    port: int,
    count: int,
    seconds: float,
    sources: list[str],
    ready: Any,
    stats: Any,
    reopen_per_second: float = REOPEN_PER_SECOND,
) -> None:
    """Hold up to ``count`` silent connections to 127.0.0.1:``port`` for
    ``seconds``, replacing those the server closes at most
    ``reopen_per_second``; put (opened, closed by the server, peak open,
    failed connects) in ``stats``."""
    selector = selectors.DefaultSelector()
    opened = closed = peak = 0
    failed_connects = 0

    def open_one() -> None:
        nonlocal opened, failed_connects
        sock = socket.socket()
        sock.setblocking(False)
        # the port is chosen at connect(), per destination: binding 15,000
        # sockets to port 0 first makes each bind search the whole range
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            sock.bind((sources[opened % len(sources)], 0))
            sock.connect_ex(("127.0.0.1", port))
        except OSError:
            failed_connects += 1
            sock.close()
            return
        selector.register(sock, selectors.EVENT_READ)
        opened += 1

    while len(selector.get_map()) < count and opened + failed_connects < count * 2:
        open_one()
    ready.set()
    deadline = time.monotonic() + seconds
    budget, window = 0.0, time.monotonic()
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            sock.close()
            closed += 1
        peak = max(peak, len(selector.get_map()))
        now = time.monotonic()
        budget = min(budget + (now - window) * reopen_per_second, reopen_per_second / 10)
        window = now
        while budget >= 1 and len(selector.get_map()) < count:
            open_one()
            budget -= 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    stats.put((opened, closed, peak, failed_connects))


@dataclass
class Latencies:
    kept: list[float]
    fresh: list[float]
    fresh_failures: int

    def line(self, label: str) -> str:
        def ms(values: list[float], q: float) -> str:
            if not values:
                return "-"
            values = sorted(values)
            return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:.1f}"

        return (
            f"{label:<30} Start on a kept connection: median {ms(self.kept, 0.5)} ms, "
            f"p95 {ms(self.kept, 0.95)} ms | connect+Start: median {ms(self.fresh, 0.5)} ms, "
            f"p95 {ms(self.fresh, 0.95)} ms, {self.fresh_failures} of "
            f"{len(self.fresh) + self.fresh_failures} refused"
        )


async def measure(addr: str, pki: Pki) -> Latencies:
    context = pki.client_context()  # type: ignore[no-untyped-call]
    request = pb.JobStartRequest(name="true")
    kept: list[float] = []
    fresh: list[float] = []
    failures = 0
    for _attempt in range(100):  # as a client would: retry a connection the daemon shed
        try:
            async with RundClient.connect(addr, context) as rund:
                for _ in range(SAMPLES):
                    began = time.perf_counter()
                    await rund.start(request)
                    kept.append(time.perf_counter() - began)
            break
        except RundError:
            await trio.sleep(0.05)
    for _ in range(SAMPLES):
        began = time.perf_counter()
        try:
            async with RundClient.connect(addr, context) as rund:
                await rund.start(request)
        except RundError:
            failures += 1
            await trio.sleep(0.05)
            continue
        fresh.append(time.perf_counter() - began)
    return Latencies(kept, fresh, failures)


def sample_fds(pid: int, counts: list[int], stop: threading.Event) -> None:
    """The daemon's open descriptors, every 0.2 s until ``stop``."""
    while not stop.wait(0.2):
        counts.append(len(os.listdir(f"/proc/{pid}/fd")))


def run_flood(
    count: int, seconds: float, sources: list[str], extra: list[str], reopen: float
) -> str:
    lines = []
    with tempfile.TemporaryDirectory(prefix="rund-flood-") as tmp:
        workdir = Path(tmp)
        pki = Pki.create(workdir / "tls")
        daemon = spawn_daemon("flood", pki, workdir, "--max-running-jobs", "0", *extra)
        try:
            unloaded = trio.run(measure, daemon.addr, pki)
            lines.append(unloaded.line("unloaded"))
            port = int(daemon.addr.rsplit(":", 1)[1])
            ready = multiprocessing.Event()
            stats: Any = multiprocessing.Queue()
            flooder = multiprocessing.Process(
                target=flood, args=(port, count, seconds, sources, ready, stats, reopen)
            )
            flooder.start()
            ready.wait(timeout=120)
            fd_counts: list[int] = []
            sampling = threading.Event()
            sampler = threading.Thread(
                target=sample_fds, args=(daemon.pid, fd_counts, sampling), daemon=True
            )
            sampler.start()
            loaded = trio.run(measure, daemon.addr, pki)
            sampling.set()
            sampler.join()
            lines.append(loaded.line(f"flood {count}, {len(sources)} addr, {reopen:.0f}/s"))
            fds = max(fd_counts, default=0)
            opened, closed, peak, failed = stats.get(timeout=seconds + 120)
            flooder.join()
            lines.append(
                f"{'':<30} flood: {opened} connections opened, {closed} closed by the daemon, "
                f"peak {peak} open, {failed} connects failed; daemon's descriptors at most: {fds}; "
                f"daemon log lines: {len(daemon.stderr_lines)}"
            )
            ratio = statistics.median(loaded.kept) / statistics.median(unloaded.kept)
            lines.append(f"{'':<30} kept-connection Start median, flood / unloaded: {ratio:.1f}x")
        finally:
            daemon.stop()
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flood",
        type=int,
        default=None,
        metavar="N",
        help="instead of the mix: a client's Start latency under a flood of N silent "
        "connections (15000 in the README)",
    )
    parser.add_argument("--flood-seconds", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--flood-sources",
        type=int,
        default=1,
        metavar="K",
        help="loopback addresses the flood comes from, 127.0.1.1 and on (default: %(default)s)",
    )
    parser.add_argument(
        "--flood-reopen",
        type=float,
        default=REOPEN_PER_SECOND,
        metavar="PER_SECOND",
        help="connections the daemon closed that the flood replaces per second "
        "(default: %(default)s; 0: open N once and hold what stays open)",
    )
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="with --flood: the daemon without admission caps, for comparison",
    )


def run_from_args(args: argparse.Namespace) -> int:
    sources = [f"127.0.1.{i + 1}" for i in range(args.flood_sources)]
    extra = (
        ["--max-handshakes", "0", "--max-handshakes-per-source", "0", "--fd-reserve", "0"]
        if args.uncapped
        else []
    )
    print(run_flood(args.flood, args.flood_seconds, sources, extra, args.flood_reopen))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.flood", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.flood is None:
        args.flood = 15000
    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``io`` phase: a job's stdin and terminal through the CLI, with OpenSSH
beside it.

- keystroke round trip: the client runs on a pseudo-terminal of ours (as a
  user's terminal), ``client run -it -- cat``; one byte written to our end,
  the time until its echo (by the job's terminal) comes back; the same with
  ``ssh -tt host cat``;
- stdin throughput: ``head -c SIZE /dev/zero | client run -i -- sh -c 'cat >
  /dev/null'`` wall time (client start included), and the same through
  ``ssh host 'cat > /dev/null'``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import time
from pathlib import Path

from bench import baselines
from bench.daemon import Pki, clean_env, rund_executable, spawn_daemon
from bench.report import Report
from bench.stats import summary

READY = b"ready"
TIMEOUT = 20.0


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {wanted!r} in {seen[-200:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other end is closed
                chunk = b""
            if not chunk:
                raise EOFError(f"end of output before {wanted!r}: {seen[-200:]!r}")
            seen += chunk
    return seen


def keystroke_round_trips(argv: list[str], count: int) -> list[float]:
    """Milliseconds from a byte written to the client's terminal to its echo
    read back, ``count`` times; ``argv`` must print ``ready`` then run ``cat``
    on a terminal of its own."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=clean_env() | {"TERM": "xterm"},
        start_new_session=True,
    )
    os.close(slave)
    samples: list[float] = []
    try:
        _read_until(master, READY, time.monotonic() + TIMEOUT)
        time.sleep(0.2)  # the echo of "ready"'s line ends; raw mode is on
        with contextlib.suppress(BlockingIOError):
            os.set_blocking(master, False)
            os.read(master, 65536)
        os.set_blocking(master, True)
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(master, b"k")
            _read_until(master, b"k", time.monotonic() + TIMEOUT)
            samples.append((time.perf_counter() - t0) * 1000)
        os.write(master, b"\r\x04")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        os.close(master)
    return samples


def pipe_seconds(size: str, argv: list[str]) -> float:
    """Wall seconds of ``head -c SIZE /dev/zero | ARGV``."""
    script = f"head -c {size} /dev/zero | {shlex.join(argv)}"
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", script], check=True, env=clean_env(), timeout=600)
    return time.perf_counter() - t0


def bench_io(report: Report, pki: Pki, work: Path, size: str, keystrokes: int) -> None:
    mb = baselines.size_bytes(size) / 1e6
    io_dir = work / "io"
    io_dir.mkdir()
    with baselines.running_sshd(io_dir) as sshd:
        if sshd is None:
            report.notes.append("OpenSSH: unavailable, the job io counterparts are missing")
        else:
            ssh_keys = summary(
                keystroke_round_trips(sshd.argv("-tt", "echo ready; exec cat"), keystrokes)
            )
            ssh_seconds = pipe_seconds(size, sshd.argv("cat > /dev/null"))
            report.raw["io.ssh.keystroke_ms"] = ssh_keys
            report.floor.update(
                ssh_key_p50=ssh_keys["p50"],
                ssh_key_p99=ssh_keys["p99"],
                ssh_stdin_mb_s=mb / ssh_seconds,
            )
        daemon = spawn_daemon("io", pki, io_dir)
        try:
            common = ["--addr", daemon.addr, *pki.client_args()]
            rund = rund_executable()
            keys = summary(
                keystroke_round_trips(
                    [rund, "client", "run", *common, "-it", "--", "sh", "-c", "echo ready; cat"],
                    keystrokes,
                )
            )
            seconds = pipe_seconds(
                size, [rund, "client", "run", *common, "-i", "--", "sh", "-c", "cat > /dev/null"]
            )
        finally:
            report.daemon_exit("io", daemon.stop())
    report.raw["io.rund.keystroke_ms"] = keys
    note = f"n={keys['n']}"
    report.add(
        "io.keystroke.p50",
        "job io",
        "keystroke to its echo, client run -it, p50",
        keys["p50"],
        "ms",
        target=5,
        counterpart="ssh_key_p50",
        note=note,
    )
    report.add(
        "io.keystroke.p99",
        "job io",
        "keystroke to its echo, client run -it, p99",
        keys["p99"],
        "ms",
        target=5,
        counterpart="ssh_key_p99",
        note=note,
    )
    report.add(
        "io.stdin.mbs",
        "job io",
        f"head -c {size} /dev/zero | client run -i -- cat > /dev/null",
        mb / seconds,
        "MB/s",
        better="higher",
        target=200,
        counterpart="ssh_stdin_mb_s",
        note=f"{seconds:.2f} s, client start included",
    )

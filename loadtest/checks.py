"""What the load's jobs write, and what a subscriber must have received: no I/O.

Every job writes numbered lines (``seq``) cut to a length on stdout and on
stderr, so any prefix of its output is known and no two places in it are
alike (a byte lost, repeated or moved changes the content, not only the
length); a subscriber's sha256 of what it received is checked against the
expected bytes without keeping them."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from functools import lru_cache


def numbered_lines(prefix: str, length: int) -> bytes:
    """The first ``length`` bytes of ``seq -f PREFIX-%.0f 1 LENGTH``."""
    lines, size, number = [], 0, 1
    while size < length:
        line = f"{prefix}-{number}\n"
        lines.append(line)
        size += len(line)
        number += 1
    return "".join(lines).encode()[:length]


@lru_cache(maxsize=4096)
def expected_digest(prefix: str, length: int) -> str:
    """sha256 of the first ``length`` bytes of the job's lines ``prefix``."""
    return hashlib.sha256(numbered_lines(prefix, length)).hexdigest()


@dataclass(frozen=True)
class JobPlan:
    """A job of the load: ``stdout`` bytes of lines ``out_prefix``, then
    ``stderr`` bytes of lines ``err_prefix``; a long job then sleeps until it
    is stopped."""

    index: int
    stdout: int
    stderr: int
    long: bool

    @property
    def out_prefix(self) -> str:
        return f"o{self.index}"

    @property
    def err_prefix(self) -> str:
        return f"e{self.index}"

    def argv(self) -> list[str]:
        script = (
            f"seq -f {self.out_prefix}-%.0f 1 {self.stdout} | head -c {self.stdout}; "
            f"seq -f {self.err_prefix}-%.0f 1 {self.stderr} | head -c {self.stderr} >&2"
        )
        if self.long:
            script += "; exec sleep 600"
        return ["sh", "-c", script]

    def __str__(self) -> str:
        return shlex.join(self.argv())


@dataclass
class Received:
    """What one subscriber got: per stream a length and a running sha256."""

    stdout_bytes: int = 0
    stderr_bytes: int = 0
    _out: hashlib._Hash = field(default_factory=hashlib.sha256)
    _err: hashlib._Hash = field(default_factory=hashlib.sha256)
    end: str = "OK"
    """"OK", or the gRPC code the stream ended with."""

    def add(self, stdout: bytes, stderr: bytes) -> None:
        self._out.update(stdout)
        self._err.update(stderr)
        self.stdout_bytes += len(stdout)
        self.stderr_bytes += len(stderr)

    @property
    def stdout_digest(self) -> str:
        return self._out.hexdigest()

    @property
    def stderr_digest(self) -> str:
        return self._err.hexdigest()


@dataclass(frozen=True)
class FinalStatus:
    """The fields of a job's final status the checks use."""

    state: str
    """"exited", "stopped", "killed"."""
    exit_code: int | None
    output_bytes: int
    dropped_bytes: int


def violations(plan: JobPlan, got: Received, status: FinalStatus) -> list[str]:
    """Everything wrong with what a subscriber received of a job that ended
    (its Log ended), given the job's final status."""
    wrong = []
    if got.stdout_digest != expected_digest(plan.out_prefix, got.stdout_bytes):
        wrong.append(f"stdout is not the first {got.stdout_bytes} bytes the job wrote")
    if got.stderr_digest != expected_digest(plan.err_prefix, got.stderr_bytes):
        wrong.append(f"stderr is not the first {got.stderr_bytes} bytes the job wrote")
    received = got.stdout_bytes + got.stderr_bytes
    if received != status.output_bytes:
        wrong.append(f"received {received} bytes, the daemon recorded {status.output_bytes}")
    if got.stdout_bytes > plan.stdout or got.stderr_bytes > plan.stderr:
        wrong.append("received more than the job wrote")
    if status.dropped_bytes and got.end != "RESOURCE_EXHAUSTED":
        wrong.append(f"{status.dropped_bytes} bytes were dropped but the Log ended {got.end}")
    if not status.dropped_bytes and got.end != "OK":
        wrong.append(f"nothing was dropped but the Log ended {got.end}")
    if plan.long:
        if status.state != "stopped":
            wrong.append(f"a long job ended {status.state}, not stopped")
    else:
        if status.state != "exited" or status.exit_code != 0:
            wrong.append(f"the job ended {status.state} (exit code {status.exit_code})")
        if received + status.dropped_bytes != plan.stdout + plan.stderr:
            wrong.append(
                f"recorded {received} + dropped {status.dropped_bytes} is not the "
                f"{plan.stdout + plan.stderr} bytes the job wrote"
            )
    return [f"job {plan.index}: {w}" for w in wrong]

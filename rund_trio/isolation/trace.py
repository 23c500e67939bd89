"""An opt-in trace of a job's start, step by step, for finding where the time goes.

Off unless the daemon runs with ``RUND_TRACE_START=<file>`` in its
environment (the fork server is started with it too). Every ``mark`` then
appends one line ``<CLOCK_MONOTONIC ns> <pid> <step>`` to that file, from the
daemon, the fork server and each job's set-up processes alike (one clock for
all of them); ``python -m bench.trace_start <file>`` turns the lines into
per-step durations. Writes are single ``O_APPEND`` writes of one line, so
processes do not interleave within a line.

When tracing is off, ``mark`` costs one comparison. Only built-in modules:
this runs in the job's set-up processes too.
"""

from __future__ import annotations

import posix
import time

ENV = "RUND_TRACE_START"
"""The environment variable naming the trace file."""

_fd = -1


def enable(path: str | None) -> None:
    """Trace into ``path`` (appending); None or empty: tracing stays off.
    The fd is close-on-exec: no job's program inherits it."""
    global _fd
    if path and _fd < 0:
        flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
        _fd = posix.open(path, flags, 0o600)


def enable_from_environment() -> None:
    """``enable`` with ``RUND_TRACE_START`` from this process's environment."""
    value = posix.environ.get(ENV.encode())
    enable(None if value is None else value.decode())


def fd() -> int:
    """The trace file's fd, or -1 when tracing is off (kept open by the
    helper, which closes every other inherited fd)."""
    return _fd


def mark(step: str) -> None:
    """Record that ``step`` is reached now, in this process."""
    if _fd >= 0:
        line = b"%d %d %s\n" % (time.monotonic_ns(), posix.getpid(), step.encode())
        try:  # noqa: SIM105 (contextlib costs the helper an import)
            posix.write(_fd, line)
        except OSError:
            pass

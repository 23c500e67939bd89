"""The daemon's own log: repeated lines rate-limited and summarised, and
``--log-format json``."""

from __future__ import annotations

import json
import logging

from rund_trio.server.daemon_log import JsonFormatter, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("rund_trio.rpc", level, __file__, 1, msg, args, None)


def limiter(clock: Clock, summaries: list[logging.LogRecord]) -> RepeatLimiter:
    return RepeatLimiter(burst=3, window=10.0, clock=clock, emit=summaries.append)


def test_the_first_lines_of_a_kind_pass_and_the_rest_are_dropped() -> None:
    summaries: list[logging.LogRecord] = []
    gate = limiter(Clock(), summaries)
    passed = [gate.filter(record("TLS handshake failed: %s", n)) for n in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert summaries == []


def test_lines_differing_only_in_arguments_are_one_kind_and_others_are_not() -> None:
    gate = limiter(Clock(), [])
    for n in range(3):
        gate.filter(record("TLS handshake failed: %s", n))
    assert not gate.filter(record("TLS handshake failed: %s", "again"))
    assert gate.filter(record("TLS handshake timed out"))


def test_the_dropped_lines_are_summarised_after_the_window() -> None:
    clock, summaries = Clock(), []  # type: ignore[var-annotated]
    gate = limiter(clock, summaries)
    for n in range(10):
        gate.filter(record("TLS handshake failed: %s", f"peer {n}"))
    clock.now = 10.0
    assert gate.filter(record("TLS handshake failed: %s", "peer 10"))
    (summary,) = summaries
    assert summary.getMessage() == (
        "TLS handshake failed repeated 7 more times in the last 10 s (last: TLS handshake failed: "
        "peer 9)"
    )
    assert summary.levelno == logging.INFO


def test_flush_summarises_a_flood_that_stopped() -> None:
    clock, summaries = Clock(), []  # type: ignore[var-annotated]
    gate = limiter(clock, summaries)
    for _ in range(5):
        gate.filter(record("TLS handshake timed out"))
    gate.flush()
    assert summaries == [], "the window is not over yet"
    clock.now = 12.0
    gate.flush()
    assert [s.getMessage() for s in summaries] == [
        "TLS handshake timed out repeated 2 more times in the last 12 s "
        "(last: TLS handshake timed out)"
    ]
    gate.flush()
    assert len(summaries) == 1, "said once"


def test_a_window_without_drops_says_nothing() -> None:
    clock, summaries = Clock(), []  # type: ignore[var-annotated]
    gate = limiter(clock, summaries)
    gate.filter(record("listening on %s", "x"))
    clock.now = 20.0
    gate.flush()
    assert summaries == []


def test_errors_are_never_dropped() -> None:
    gate = limiter(Clock(), [])
    assert all(gate.filter(record("boom", level=logging.ERROR)) for _ in range(10))


def test_json_lines_carry_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("closed a connection from %s at once", "192.0.2.1"))
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "rund_trio.rpc"
    assert entry["message"] == "closed a connection from 192.0.2.1 at once"
    assert entry["time"].endswith("+00:00")
    assert "\n" not in line

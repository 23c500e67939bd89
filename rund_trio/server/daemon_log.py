"""The daemon's own log: text or JSON lines on stderr, with repeated lines
rate-limited.

A flood (thousands of handshakes timing out, a client retrying with a refused
certificate) must not turn into one line per connection. ``RepeatLimiter``
lets the first ``burst`` records of one kind (the same logger, level and
message template, whatever the arguments) through in each ``window`` seconds,
drops the rest, and when the window is over logs one summary line:
``... repeated 1234 more times in the last 10 s (last: <message>)``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

_SUMMARY = "rund_trio_summary"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message
    (and ``exception`` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass
class _Kind:
    window_start: float
    passed: int = 0
    dropped: int = 0
    last: str = ""
    level: int = logging.INFO
    logger: str = ""
    template: str = ""


class RepeatLimiter(logging.Filter):
    """A handler filter passing at most ``burst`` records of each kind per
    ``window`` seconds; dropped ones are counted and summarised in one record
    at the first record of that kind after the window, or at ``flush()``
    (which the daemon calls every window). ``clock`` is injectable for tests.
    Records at ERROR and above are never dropped."""

    def __init__(
        self,
        *,
        burst: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[logging.LogRecord], object] | None = None,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        self._emit = emit
        """Where summary records go (default: the logger they are about)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False) or record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = _Kind(
                window_start=now, level=record.levelno, logger=record.name, template=str(record.msg)
            )
        elif now - kind.window_start >= self.window:
            self._summarise(kind, now)
            kind.window_start, kind.passed = now, 0
        if kind.passed < self.burst:
            kind.passed += 1
            return True
        kind.dropped += 1
        kind.last = record.getMessage()
        return False

    def flush(self) -> None:
        """Summarise every kind whose window is over (and forget idle kinds)."""
        now = self._clock()
        for key, kind in list(self._kinds.items()):
            if now - kind.window_start >= self.window:
                self._summarise(kind, now)
                del self._kinds[key]

    def _summarise(self, kind: _Kind, now: float) -> None:
        if not kind.dropped:
            return
        record = logging.LogRecord(
            kind.logger,
            kind.level,
            __file__,
            0,
            "%s repeated %d more times in the last %.0f s (last: %s)",
            (kind.template.split("%", 1)[0].rstrip(": ") or "a line", kind.dropped,
             now - kind.window_start, kind.last),
            None,
        )  # fmt: skip
        setattr(record, _SUMMARY, True)
        kind.dropped = 0
        if self._emit is not None:
            self._emit(record)
        else:
            logging.getLogger(kind.logger).handle(record)


def configure(level: str, log_format: str) -> RepeatLimiter:
    """Send the daemon's log to stderr in ``log_format`` (``text`` or
    ``json``) at ``level``, rate-limited; the limiter, for its ``flush``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    limiter = RepeatLimiter(emit=handler.handle)
    handler.addFilter(limiter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return limiter


async def flush_every(limiter: RepeatLimiter) -> None:
    """Call ``limiter.flush()`` once a window, until cancelled (so a flood's
    summary appears even when the flood stops)."""
    import trio

    while True:
        await trio.sleep(limiter.window)
        limiter.flush()

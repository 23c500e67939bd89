"""What part of a job's output a Log call asks for; validated, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from rund_trio.errors import InvalidRequest


@dataclass(frozen=True)
class LogQuery:
    """Options of one Log call; the defaults are the original rund's: the
    whole output, followed until the job's output ends."""

    follow: bool = True
    """Keep sending live output until the job's output ends; False: only what
    is recorded when the call starts."""
    tail_lines: int | None = None
    """Start at the last N lines of the combined output; None: at its start."""
    since: int | None = None
    """Only pieces recorded at or after this time (ns since the epoch)."""
    timestamps: bool = False
    """Send each piece as read, with the time it was recorded."""

    @property
    def whole(self) -> bool:
        """From the first byte, without timestamps: the journal read as it is."""
        return self.tail_lines is None and self.since is None and not self.timestamps


WHOLE_LOG = LogQuery()
"""The whole output, followed: what a Log request without options asks for."""


def describe_time(ns: int) -> str:
    """``ns`` since the epoch in RFC 3339, UTC, to the microsecond."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def validate_log_query(query: LogQuery, *, now: int) -> LogQuery:
    """``query`` if it makes sense at ``now`` (ns since the epoch); otherwise
    ``InvalidRequest`` saying what to send instead."""
    if query.tail_lines is not None and query.tail_lines < 0:
        raise InvalidRequest(
            f"tail_lines {query.tail_lines} is negative: ask for 0 or more lines, "
            "or leave it unset for the whole output"
        )
    if query.since is not None and query.since > now:
        raise InvalidRequest(
            f"since {describe_time(query.since)} is in the future (the daemon's clock says "
            f"{describe_time(now)}): no output can have been recorded after it yet"
        )
    return query

"""``client log``'s options and how its output is written."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rund_trio.client.api import RundClient

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta | None:
    """``10m``, ``1h30m``, ``90s``, ``1.5h``, ``2d``; None if ``text`` is not one."""
    if not text or _DURATION_PART.sub("", text):
        return None
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an RFC 3339 time (without a zone: local time) or a duration
    before ``now``. ``ValueError`` with the reason for anything else, or for a
    time after ``now``."""
    duration = parse_duration(text)
    if duration is not None:
        return now - duration
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a time (RFC 3339, e.g. 2024-05-01T12:00:00Z) "
            "nor a duration before now (e.g. 10m, 1h30m)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    if when > now:
        raise ValueError(
            f"--since {text} is in the future (it is now {now.astimezone().isoformat()}): "
            "no output can have been recorded after it yet"
        )
    return when


def _tail(text: str) -> int:
    try:
        lines = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines") from None
    if lines < 0:
        raise argparse.ArgumentTypeError(f"{lines} lines: ask for 0 or more")
    return lines


def _since(text: str) -> datetime:
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="write what is recorded now and exit (default: follow until the job's output ends)",
    )
    parser.add_argument(
        "--tail",
        type=_tail,
        default=None,
        metavar="N",
        help="start at the last N lines of the output (stdout and stderr together)",
    )
    parser.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="TIME",
        help="only output recorded since TIME: RFC 3339 (2024-05-01T12:00:00Z; "
        "without a zone: local time) or a duration before now (10m, 1h30m)",
    )
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="prefix each line with the time the daemon recorded it (RFC 3339, UTC)",
    )


def format_timestamp(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as ``docker logs -t`` writes it."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


class LineStamper:
    """Prefixes each line of one stream with the time its first byte was
    recorded; a line may span several chunks."""

    def __init__(self) -> None:
        self._at_line_start = True

    def stamp(self, data: bytes, recorded_at: int | None) -> bytes:
        if recorded_at is None or not data:
            return data
        prefix = format_timestamp(recorded_at).encode() + b" "
        lines = data.split(b"\n")
        out = bytearray()
        for number, line in enumerate(lines):
            last = number == len(lines) - 1
            if last and not line:  # the data ended with a newline
                self._at_line_start = True
                break
            if number > 0 or self._at_line_start:
                out += prefix
            out += line
            if not last:
                out += b"\n"
            self._at_line_start = False
        return bytes(out)


async def copy_log(
    client: RundClient, job_id: str, stdout: IO[bytes], stderr: IO[bytes], **options: Any
) -> None:
    """Write the job's output to ``stdout`` and ``stderr`` in the order the
    daemon recorded it (each chunk flushed before the next is written)."""
    stamps = (LineStamper(), LineStamper())
    async for chunk in client.log(job_id, **options):
        if chunk.stdout:
            stdout.write(stamps[0].stamp(chunk.stdout, chunk.recorded_at))
            stdout.flush()
        if chunk.stderr:
            stderr.write(stamps[1].stamp(chunk.stderr, chunk.recorded_at))
            stderr.flush()

"""How ``client log`` reads its options and writes timestamps; no daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rund_trio.cli.log_options import LineStamper, format_timestamp, parse_duration, parse_since

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations_are_read_like_docker_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "-5m", "10x"])
def test_other_text_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None


def test_since_a_duration_is_that_long_before_now() -> None:
    assert parse_since("10m", NOW) == NOW - timedelta(minutes=10)


def test_since_an_rfc3339_time_keeps_its_zone() -> None:
    assert parse_since("2026-12-01T10:00:00+01:00", NOW) == datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_since_in_the_future_is_refused() -> None:
    with pytest.raises(ValueError, match="is in the future"):
        parse_since("2026-12-01T13:00:00Z", NOW)


def test_a_timestamp_is_rfc3339_utc_with_nanoseconds() -> None:
    assert format_timestamp(1_733_054_400_000_000_005) == "2024-12-01T12:00:00.000000005Z"


def test_each_line_is_stamped_once_even_when_split_over_chunks() -> None:
    stamper = LineStamper()
    first = stamper.stamp(b"a\nhal", 10**9)
    second = stamper.stamp(b"f\nb\n", 2 * 10**9)
    assert first == b"1970-01-01T00:00:01.000000000Z a\n1970-01-01T00:00:01.000000000Z hal"
    assert second == b"f\n1970-01-01T00:00:02.000000000Z b\n"


def test_chunks_without_a_time_are_written_as_they_are() -> None:
    assert LineStamper().stamp(b"plain\n", None) == b"plain\n"

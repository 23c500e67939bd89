"""Durations on the command line."""

from __future__ import annotations

import argparse

import pytest

from rund_trio.cli.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800),
     ("1h30m", 5400), ("0", 0), ("1.5h", 5400)],
)  # fmt: skip
def test_durations_with_and_without_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "h", "-5", "1h 30m", "inf", "nan"])
def test_anything_else_is_an_argparse_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)

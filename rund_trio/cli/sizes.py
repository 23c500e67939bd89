"""Byte sizes on the command line: 1048576, 512K, 100M, 2G (powers of 1024)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client imports this module and needs none of the daemon's
    from rund_trio.logs.budget import Reserve

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """A byte count with an optional K/M/G/T suffix (KiB-based); argparse error otherwise."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in _UNITS:
        number, unit = cleaned[:-1], cleaned[-1]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 4096, 64K, 100M, 2G)")
    return int(number) * _UNITS[unit]


def parse_reserve(text: str) -> Reserve:
    """Free space to keep: a size (``2G``) or a share of the filesystem (``5%``)."""
    from rund_trio.logs.budget import Reserve

    if text.strip().endswith("%"):
        number = text.strip().removesuffix("%")
        try:
            percent = float(number)
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a percentage between 0% and 100% (or a size such as 1G)"
            )
        return Reserve(bytes=None, fraction=percent / 100)
    return Reserve(bytes=parse_size(text), fraction=None)

"""Large stream buffers come from the heap once the thresholds are raised."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from rund_trio.wire.heap import keep_stream_buffers_in_heap
tuned = sys.argv[1] == "tuned" and keep_stream_buffers_in_heap()
def mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)
before = mappings()
buffer = bytes(1024 * 1024)
print(tuned, mappings() - before)
"""


def new_mappings(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True
    ).stdout.split()
    return out[0], int(out[1])


def test_a_1_mib_buffer_gets_a_mapping_of_its_own_by_default() -> None:
    assert new_mappings("default") == ("False", 1)


def test_once_tuned_a_1_mib_buffer_comes_from_the_heap() -> None:
    tuned, mappings = new_mappings("tuned")
    if tuned != "True":
        pytest.skip("not glibc")
    assert mappings == 0

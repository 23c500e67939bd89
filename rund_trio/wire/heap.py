"""glibc's malloc, told to keep the buffers of a stream in the heap.

A Log stream allocates buffers of about 1 MiB (a message, its TLS records,
the socket reads). glibc serves an allocation that large with a fresh mmap,
or trims the top of the heap once it is freed, so every buffer's pages were
faulted in and zeroed again: py-spy put a quarter of a subscriber's time in
those faults. With both thresholds raised, freed buffers are reused; the heap
may keep up to ``TRIM_THRESHOLD`` bytes it no longer needs.
"""

from __future__ import annotations

import ctypes

MMAP_THRESHOLD = 4 * 1024 * 1024
"""Allocations below this come from the heap, not from a mapping of their own."""
TRIM_THRESHOLD = 32 * 1024 * 1024
"""Free memory at the top of the heap is returned to the system beyond this."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_stream_buffers_in_heap() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where
    the C library is not glibc (nothing changes then)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )

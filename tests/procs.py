"""Looking at the host's processes from tests. Zombies count as gone: they run
nothing, and this sandbox's PID 1 never reaps orphans."""

from __future__ import annotations

import os
from pathlib import Path


def _live_state(pid: int) -> tuple[int, bytes] | None:
    """(process group, command line) of a live, non-zombie process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[3]), cmdline


def process_is_gone(pid: int) -> bool:
    return _live_state(pid) is None


def live_pids(*, group: int | None = None, cmdline: bytes | None = None) -> list[int]:
    """Live processes in process group ``group`` and/or with command line
    ``cmdline`` (NUL-separated, as in /proc/PID/cmdline)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        state = _live_state(int(entry))
        if state is None:
            continue
        if (group is None or state[0] == group) and (cmdline is None or state[1] == cmdline):
            found.append(int(entry))
    return found

"""Looking at the host's processes from tests. Zombies count as gone: they run
nothing, and this sandbox's PID 1 never reaps orphans."""

from __future__ import annotations

import os
from pathlib import Path

import trio


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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants, from /proc/PID/task/*/children."""
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        tree.append(parent)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(child) for child in children)
    return tree


async def wait_until_gone(pid: int) -> None:
    """Return once process ``pid`` (any process, not only a child) has ended:
    its pidfd becomes readable when it does."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)

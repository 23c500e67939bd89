"""What an in-process daemon holds, for tests that check nothing leaks: this
process's open file descriptors and trio tasks (the daemon runs in the test's
own trio run, in the test process)."""

from __future__ import annotations

import os

import trio


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def trio_tasks() -> int:
    """Tasks alive in this trio run, from the root task down."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count

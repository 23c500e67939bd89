"""Ending a job's process tree: politely first when asked to, then for sure."""

from __future__ import annotations

import signal

import trio

from rund_trio.process.base import ExitStatus, JobProcess


async def terminate(process: JobProcess, grace: float) -> ExitStatus:
    """Kill every process of the job and return once its main process is reaped.

    With a positive ``grace`` the tree gets SIGTERM first and SIGKILL only if the
    main process is still there ``grace`` seconds later; otherwise SIGKILL at
    once. Cancellation is not special-cased: callers that must see the process
    reaped (shutdown, a job task's cleanup) call this in a shielded scope.
    """
    if grace > 0:
        process.signal_tree(signal.SIGTERM)
        with trio.move_on_after(grace):
            return await process.wait()
    process.signal_tree(signal.SIGKILL)
    return await process.wait()

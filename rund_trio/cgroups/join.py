"""Putting the calling process into a job's cgroup, race-free, before exec.

This module imports nothing but ``os`` and ``sys`` (and the package's
``__init__`` imports no trio either), so a lightweight helper process can use it
between fork and exec without paying for the daemon's imports.

The intended use: the daemon creates the job's leaf and applies its limits
(``CgroupTree.create_job``), then starts the job through a helper that, in the
child, calls ``join_cgroup(leaf)`` and only then execs the user's program. The
program's first instruction therefore already runs under the limits, and every
process it forks is born inside the cgroup. Join before dropping privileges:
moving a process needs write access to the target's ``cgroup.procs`` and to
that of the common ancestor of the source and target cgroups.

``python -m rund_trio.cgroups.join LEAF PROGRAM [ARG...]`` is such a helper
ready to use: it joins ``LEAF`` and execs ``PROGRAM`` (looked up in ``PATH``),
exiting with status 127 and a one-line reason on stderr when either fails.
"""

from __future__ import annotations

import os
import sys

__all__ = ["join_cgroup", "main"]


def join_cgroup(leaf: str | os.PathLike[str]) -> None:
    """Move the calling process (all its threads) into the cgroup at ``leaf``.

    Writes ``"0"`` to ``<leaf>/cgroup.procs`` in one ``write(2)``; the kernel
    reads 0 as "the writer". Raises ``OSError`` when the move fails (the cgroup
    is gone, permissions, or the no-internal-processes rule of cgroup v2, which
    makes the kernel refuse with EBUSY when ``leaf`` has controllers enabled in
    its own ``cgroup.subtree_control``). Async-signal-safe in spirit: it does one
    open, one write and one close, and allocates nothing the child would need to
    free, so it can run between fork and exec.
    """
    fd = os.open(os.path.join(os.fspath(leaf), "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``join LEAF PROGRAM [ARG...]``: join ``LEAF`` then exec ``PROGRAM``.

    Only returns (with 127 or 2) when joining or exec fails.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.stderr.write("usage: python -m rund_trio.cgroups.join LEAF PROGRAM [ARG...]\n")
        return 2
    leaf, program, *rest = args
    try:
        join_cgroup(leaf)
    except OSError as exc:
        sys.stderr.write(f"cannot join cgroup {leaf}: {exc.strerror or exc}\n")
        return 127
    try:
        os.execvp(program, [program, *rest])
    except OSError as exc:
        sys.stderr.write(f"cannot execute {program!r}: {exc.strerror or exc}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main())

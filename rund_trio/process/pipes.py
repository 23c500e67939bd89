"""Pipes for a job's output, shared by the spawners."""

from __future__ import annotations

import contextlib
import fcntl
import os

PIPE_SIZE = 1024 * 1024


def open_output_pipe() -> tuple[int, int]:
    """A close-on-exec pipe for a job's output, enlarged so fast writers block
    less often. Returns (read end, write end); both blocking, as the job's end
    must be (``trio.lowlevel.FdStream`` makes the read end non-blocking, which
    affects only the read end's open file description)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    # Above /proc/sys/fs/pipe-max-size for an unprivileged daemon: keep the default.
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


def move_above(fd: int, lowest: int) -> int:
    """``fd`` itself if it is at least ``lowest``, else a close-on-exec
    duplicate that is (the original is closed). For file actions that dup2
    onto fixed numbers: a source below them could be overwritten first."""
    if fd >= lowest:
        return fd
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return high

"""What the client knows of its own stdin and terminal without an event loop
(``cli.interactive`` reads and follows them on anyio): for ``client start``,
which runs without one."""

from __future__ import annotations

import contextlib
import os
import stat
import sys

__all__ = ["STDIN_FD", "note_stdin_not_sent", "stdin_kind", "window_size"]

STDIN_FD = 0


def stdin_kind(fd: int = STDIN_FD) -> str:
    """``"tty"``, ``"pipe"`` (a FIFO or socket), ``"file"`` (a regular
    file), or ``"other"`` (e.g. /dev/null, or closed)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "other"
    if os.isatty(fd):
        return "tty"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "pipe"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def note_stdin_not_sent(fd: int = STDIN_FD) -> None:
    """Say on stderr that stdin is not sent when it is a pipe or a file, so
    that ``echo hi | rund-trio client run -- cat`` does not drop it silently."""
    if stdin_kind(fd) in ("pipe", "file"):
        print(
            "rund-trio: note: your stdin is not sent to the job (its stdin is /dev/null); "
            "add -i to send it",
            file=sys.stderr,
        )


def window_size() -> tuple[int, int] | None:
    """(rows, columns) of the client's terminal (stdin's, else stdout's), or
    None when neither is a terminal."""
    for fd in (STDIN_FD, 1):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
    return None

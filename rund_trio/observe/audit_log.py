"""The audit log file: JSON lines appended with one ``write(2)`` each, rotated
by size, and honest about failures.

Writes are synchronous: a record is a few hundred bytes appended to an
``O_APPEND`` descriptor, which costs microseconds against the page cache, so
a request is slowed by the write itself and nothing else, and a record is in
the file (or known lost) before the request's answer is sent. A queue and a
writer task would add a hand-off to every record, lose what is queued at a
crash, and leave ``--audit-required`` unable to tell whether the last record
was kept. (A log on a filesystem that can hang, such as NFS, would block the
daemon; keep it on a local disk.)

A failed write (a full disk, a read-only filesystem, a vanished directory)
loses that record, which is counted; the daemon's log says so once when the
trouble starts, at most once a minute while it lasts, and once when writes
work again. A file deleted behind the daemon's back is noticed at the next
record (one ``fstat``) and created anew; one renamed (rotated by another
tool) keeps receiving records for at most a second, then the path is opened
anew.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

STDOUT = "-"
REPORT_EVERY = 60.0
"""Seconds between two daemon log lines about the same lasting failure."""
PATH_CHECK_EVERY = 1.0
"""Seconds between two checks that the path still names the open file."""


class AuditLog:
    """One append-only JSON-lines file (or standard output)."""

    def __init__(self, target: str, *, max_size: int | None = None, keep: int = 5) -> None:
        """``target`` is a path or ``-`` for standard output (never rotated).
        ``max_size``: rotate before a record would take the file beyond it
        (None: never); ``keep``: rotated files kept (``FILE.1`` the newest)."""
        self.target = target
        self._path = None if target == STDOUT else Path(target)
        self._max_size = max_size
        self._keep = keep
        self._fd: int | None = None
        self._size = 0
        self.records = 0
        """Records written."""
        self.lost = 0
        """Records that could not be written."""
        self.error: str | None = None
        """Why the last write failed; None while writes work."""
        self._lost_in_episode = 0
        self._reported_at = -REPORT_EVERY
        self._path_checked_at = -PATH_CHECK_EVERY
        if self._path is None:
            self._fd = 1
        else:
            self._open()  # an unusable path at start-up is the operator's error: raise

    @property
    def writable(self) -> bool:
        return self.error is None

    def _open(self) -> None:
        assert self._path is not None
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _close(self) -> None:
        if self._fd is not None and self._fd != 1:
            os.close(self._fd)
        self._fd = None

    def _still_there(self) -> bool:
        """Whether the open file is still the one at the path: not deleted
        (checked each time), not renamed (checked once a second)."""
        assert self._path is not None and self._fd is not None
        mine = os.fstat(self._fd)
        if mine.st_nlink == 0:
            return False
        now = time.monotonic()
        if now - self._path_checked_at < PATH_CHECK_EVERY:
            return True
        self._path_checked_at = now
        try:
            here = os.stat(self._path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _rotate(self) -> None:
        assert self._path is not None
        self._close()
        name = str(self._path)
        if self._keep == 0:
            os.unlink(name)
        else:
            for index in range(self._keep - 1, 0, -1):
                if os.path.exists(f"{name}.{index}"):
                    os.replace(f"{name}.{index}", f"{name}.{index + 1}")
            os.replace(name, f"{name}.1")
        self._open()

    def write(self, line: bytes) -> bool:
        """Append ``line`` (one JSON document and its newline) whole; False
        (and the record counted as lost) when it could not be."""
        try:
            if self._path is not None:
                if self._fd is None or not self._still_there():
                    self._close()
                    self._open()
                too_big = self._max_size is not None and self._size + len(line) > self._max_size
                if too_big and self._size:
                    self._rotate()
            assert self._fd is not None
            written = os.write(self._fd, line)
            if written != len(line):
                # A short append: the disk filled up mid-record. The torn
                # record is completed by a newline so the next one parses.
                os.write(self._fd, b"\n")
                raise OSError(errno.ENOSPC, "the record was cut short (disk full)")
            self._size += written
        except OSError as error:
            self._failed(error)
            return False
        self.records += 1
        if self.error is not None:
            log.warning(
                "the audit log %s is written again; %d records were lost",
                self.target,
                self._lost_in_episode,
            )
            self.error = None
            self._lost_in_episode = 0
        return True

    def _failed(self, error: OSError) -> None:
        self.lost += 1
        self._lost_in_episode += 1
        first = self.error is None
        self.error = error.strerror or str(error)
        if self._path is not None and error.errno in (errno.ENOENT, errno.ESTALE):
            self._close()  # the directory went away: open anew next time
        now = time.monotonic()
        if first or now - self._reported_at >= REPORT_EVERY:
            self._reported_at = now
            log.error(
                "cannot write the audit log %s: %s (%d records lost so far)",
                self.target,
                self.error,
                self._lost_in_episode,
            )

    def close(self) -> None:
        self._close()

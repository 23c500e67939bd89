"""The handful of file operations the cgroup code does, in one replaceable place.

cgroupfs has rules a plain file system does not: each write must be a single
``write(2)`` (the kernel parses one buffer per call), directories are removed
with ``rmdir`` although they hold files, and writing to a control file has side
effects. ``CgroupFS`` does the real thing; the unit tests substitute a subclass
that emulates the kernel's side effects on a temporary directory.

Every method is synchronous and cheap: cgroupfs operations do not touch a disk.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CgroupFS"]


class CgroupFS:
    """Reads and writes cgroupfs files the way the kernel expects."""

    def read(self, path: Path) -> str:
        """The whole file as text. Raises ``OSError`` (e.g. FileNotFoundError)."""
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()

    def write(self, path: Path, text: str) -> None:
        """Write ``text`` to an existing control file in one ``write(2)``.

        Raises ``OSError`` with the kernel's verdict (EINVAL, EBUSY, ...).
        """
        data = text.encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):  # pragma: no cover - cgroupfs never short-writes
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")

    def exists(self, path: Path) -> bool:
        return os.path.lexists(path)

    def mkdir(self, path: Path) -> None:
        """Create one cgroup. Raises ``FileExistsError`` if it already exists."""
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        """Remove one cgroup; fails with EBUSY while it has processes or children."""
        os.rmdir(path)

    def subdirs(self, path: Path) -> list[str]:
        """Names of the child cgroups of ``path``, sorted; [] if it is gone."""
        try:
            with os.scandir(path) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, path: Path) -> frozenset[str]:
        """Names of the interface files in ``path``; empty if it is gone."""
        try:
            with os.scandir(path) as it:
                return frozenset(e.name for e in it if not e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return frozenset()

"""Where the cgroup v2 hierarchy is mounted and where this process sits in it.

Pure parsers work on the text of ``/proc/self/mountinfo`` and
``/proc/self/cgroup`` so every layout (pure v2, a v1/v2 hybrid with cgroup2 on
``/sys/fs/cgroup/unified``, no cgroup2 at all, a cgroup namespace) is testable;
the thin readers below them only read those files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "Cgroup2Mount",
    "CgroupLocation",
    "locate",
    "parse_controllers",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "read_controllers",
    "read_location",
]

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, and so on)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Cgroup2Mount:
    """One cgroup2 mount: where it is, and which cgroup is its top.

    ``root`` is ``/`` for an ordinary mount; a bind mount of a subtree (seen in
    some containers) has the cgroup path of its top there instead.
    """

    mount_point: Path
    root: PurePosixPath


@dataclass(frozen=True)
class CgroupLocation:
    """The cgroup2 mount and this process's cgroup, as paths one can open."""

    mount: Cgroup2Mount
    cgroup: PurePosixPath
    """The process's cgroup as ``/proc/self/cgroup`` names it (``/`` = the top)."""
    path: Path
    """The directory of that cgroup in the file system."""


def parse_mountinfo(text: str) -> list[Cgroup2Mount]:
    """Every cgroup2 mount in a ``/proc/<pid>/mountinfo`` text, in mount order.

    A line is ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE
    SOURCE SUPEROPTIONS``; the optional fields end at the lone ``-``. Malformed
    lines are skipped. An empty list means no cgroup2 is mounted.
    """
    mounts: list[Cgroup2Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) <= sep + 1 or fields[sep + 1] != "cgroup2":
            continue
        mounts.append(
            Cgroup2Mount(
                mount_point=Path(_unescape(fields[4])),
                root=PurePosixPath(_unescape(fields[3])),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> PurePosixPath | None:
    """The v2 cgroup from a ``/proc/<pid>/cgroup`` text: the ``0::PATH`` line.

    Returns None when there is no such line (a v1-only kernel). A cgroup
    removed under the process reads ``PATH (deleted)``; the suffix is dropped.
    """
    for line in text.splitlines():
        if line.startswith("0::"):
            path = line[3:]
            if path.endswith(" (deleted)"):
                path = path[: -len(" (deleted)")]
            return PurePosixPath(path or "/")
    return None


def locate(mounts: list[Cgroup2Mount], cgroup: PurePosixPath | None) -> CgroupLocation | None:
    """Join the two: the mount whose top contains ``cgroup``, and its directory.

    Prefers an ordinary (``root`` ``/``) mount; with a cgroup namespace the
    process's path is already relative to the namespace's top, which is the
    mount's top too. Returns None when nothing is mounted or no mount holds
    the process's cgroup.
    """
    if cgroup is None or not mounts:
        return None
    for mount in sorted(mounts, key=lambda m: m.root != PurePosixPath("/")):
        if cgroup == mount.root or mount.root in cgroup.parents:
            rel = cgroup.relative_to(mount.root)
            path = mount.mount_point if str(rel) == "." else mount.mount_point / rel
            return CgroupLocation(mount=mount, cgroup=cgroup, path=path)
    return None


def parse_controllers(text: str) -> frozenset[str]:
    """The controller names of a ``cgroup.controllers`` or ``cgroup.subtree_control``."""
    return frozenset(text.split())


def read_controllers(path: Path) -> frozenset[str]:
    """The controllers available in the cgroup at ``path`` (empty if unreadable)."""
    try:
        return parse_controllers((path / "cgroup.controllers").read_text())
    except OSError:
        return frozenset()


def read_location(pid: int | None = None) -> CgroupLocation | None:
    """Where cgroup2 is mounted and where process ``pid`` (default: this one) is.

    None when no cgroup2 is mounted, the kernel has no v2 hierarchy, or /proc
    cannot be read.
    """
    proc = f"/proc/{pid}" if pid is not None else "/proc/self"
    try:
        with open(os.path.join(proc, "mountinfo"), encoding="utf-8", errors="replace") as f:
            mountinfo = f.read()
        with open(os.path.join(proc, "cgroup"), encoding="utf-8", errors="replace") as f:
            proc_cgroup = f.read()
    except OSError:
        return None
    return locate(parse_mountinfo(mountinfo), parse_proc_cgroup(proc_cgroup))

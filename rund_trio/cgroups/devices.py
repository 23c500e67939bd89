"""The block devices io limits apply to: ``--io-device`` values and the default set.

io.max is per device, so an io limit in a Start request is applied to each
configured device. The operator names them with a repeatable ``--io-device``
(``MAJ:MIN`` or a ``/dev`` path); without one the daemon uses the machine's
whole physical disks.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rund_trio.errors import ConfigError

__all__ = ["IoDevice", "default_io_devices", "parse_io_device"]

_MAJ_MIN = re.compile(r"^(\d+):(\d+)$")

# Kinds of block device that are never a job's real I/O target, or that io.max
# refuses (bio-based drivers without a throttling queue): matched on the name.
_SKIPPED_PREFIXES = ("loop", "ram", "zram", "nbd", "dm-", "md", "sr", "fd", "nullb")


@dataclass(frozen=True, order=True)
class IoDevice:
    """A block device by number, as io.max names it."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}:{self.minor}"


def parse_io_device(spec: str, *, stat_fn: Callable[[str], os.stat_result] = os.stat) -> IoDevice:
    """An ``--io-device`` value: ``MAJ:MIN`` or a path to a block device.

    Raises ``ConfigError`` naming the value when it is neither.
    """
    m = _MAJ_MIN.match(spec.strip())
    if m:
        return IoDevice(int(m.group(1)), int(m.group(2)))
    if not spec.startswith("/"):
        raise ConfigError(
            f"--io-device {spec!r}: expected MAJ:MIN (e.g. 8:0) or a block device path (/dev/sda)"
        )
    try:
        st = stat_fn(spec)
    except OSError as exc:
        raise ConfigError(f"--io-device {spec!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISBLK(st.st_mode):
        raise ConfigError(f"--io-device {spec!r} is not a block device")
    return IoDevice(os.major(st.st_rdev), os.minor(st.st_rdev))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def default_io_devices(sys_block: Path = Path("/sys/block")) -> tuple[IoDevice, ...]:
    """The machine's whole disks: what io limits apply to when none are configured.

    ``/sys/block`` lists whole disks only (partitions live below them). Skipped:
    virtual devices (loop, ram, zram, device-mapper, md, nbd, ... by name and
    anything whose sysfs node lives under ``devices/virtual``), removable and
    empty (size 0) devices. Sorted by number, without duplicates.
    """
    found: set[IoDevice] = set()
    names: Iterable[str]
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return ()
    for name in names:
        if name.startswith(_SKIPPED_PREFIXES):
            continue
        node = sys_block / name
        if "/devices/virtual/" in os.path.realpath(node):
            continue
        if _read(node / "removable") == "1" or _read(node / "size") in (None, "0"):
            continue
        dev = _read(node / "dev")
        m = _MAJ_MIN.match(dev or "")
        if m:
            found.add(IoDevice(int(m.group(1)), int(m.group(2))))
    return tuple(sorted(found))

"""cgroup v2 support: one leaf cgroup per job, with limits, kill and accounting.

Modules, each owning one concept:

- ``discovery``: where cgroup2 is mounted and where this process sits in it.
- ``devices``: the block devices io limits apply to (``--io-device``, defaults).
- ``limits``: ``Limits``, their validation, and the control-file writes they become.
- ``stats``: parsing a cgroup's cpu/memory/pids/io accounting.
- ``fs``: the cgroupfs file operations (replaced by a fake in unit tests).
- ``watch``: waiting for a control file to change (inotify, no polling).
- ``tree``: the daemon's subtree and the job leaves (``CgroupTree``, ``JobCgroup``).
- ``join``: ``join_cgroup``, for the child between fork and exec.

Importing this package does not import trio; the names from ``tree`` and
``watch`` (which need it) and ``join_cgroup`` are loaded on first access, so a
spawning helper can ``from rund_trio.cgroups.join import join_cgroup`` cheaply
and ``python -m rund_trio.cgroups.join`` runs without a runpy warning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rund_trio.cgroups.devices import IoDevice, default_io_devices, parse_io_device
from rund_trio.cgroups.discovery import CgroupLocation, read_location
from rund_trio.cgroups.limits import LimitConfig, Limits, validate_limits
from rund_trio.cgroups.stats import CgroupStats

if TYPE_CHECKING:
    from rund_trio.cgroups.join import join_cgroup
    from rund_trio.cgroups.tree import CgroupOptions, CgroupTree, JobCgroup
    from rund_trio.cgroups.watch import FileWatcher

__all__ = [
    "CgroupLocation",
    "CgroupOptions",
    "CgroupStats",
    "CgroupTree",
    "FileWatcher",
    "IoDevice",
    "JobCgroup",
    "LimitConfig",
    "Limits",
    "default_io_devices",
    "join_cgroup",
    "parse_io_device",
    "read_location",
    "validate_limits",
]

_LAZY = {
    "CgroupOptions": "rund_trio.cgroups.tree",
    "CgroupTree": "rund_trio.cgroups.tree",
    "JobCgroup": "rund_trio.cgroups.tree",
    "FileWatcher": "rund_trio.cgroups.watch",
    "join_cgroup": "rund_trio.cgroups.join",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

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

Importing this package does not import trio: import ``tree`` and ``watch``
(which need it) and ``join`` from their modules, so a spawning helper can
``from rund_trio.cgroups.join import join_cgroup`` cheaply and
``python -m rund_trio.cgroups.join`` runs without a runpy warning.
"""

from __future__ import annotations

from rund_trio.cgroups.devices import IoDevice, default_io_devices, parse_io_device
from rund_trio.cgroups.discovery import CgroupLocation, read_location
from rund_trio.cgroups.limits import LimitConfig, Limits, validate_limits
from rund_trio.cgroups.stats import CgroupStats

__all__ = [
    "CgroupLocation",
    "CgroupStats",
    "IoDevice",
    "LimitConfig",
    "Limits",
    "default_io_devices",
    "parse_io_device",
    "read_location",
    "validate_limits",
]

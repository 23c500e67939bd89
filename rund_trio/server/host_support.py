"""Whether this host can honour what the operator asked ``serve`` for.

An option given explicitly (``--pids-max 100``, ``--io-device``,
``--cgroup-root``, ``--rootfs``, ``--run-as``) that the host cannot honour
stops start-up with one ``ConfigError`` line saying why and what to do; a
protection that is only a default and cannot be had here (no cgroups, no pids
controller) is a WARNING at start-up. Nothing is silently left unenforced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import IsolationPolicy


@dataclass(frozen=True)
class Requested:
    """Which options the operator gave explicitly, rather than left at their default."""

    pids_max: int | None = None
    """The --pids-max given (0: no cap, asks for nothing); None: the default."""
    io_devices: bool = False
    cgroup_root: bool = False
    rootfs: bool = False
    run_as: bool = False


def _controller_missing(tree: CgroupTree | None, controller: str) -> str | None:
    """Why ``controller`` cannot limit jobs here, or None if it can."""
    if tree is None:
        return "cgroups are off (--no-cgroups)"
    if not tree.enabled:
        return f"no usable cgroup v2 ({tree.disabled_reason})"
    if controller not in tree.controllers:
        return f"no {controller} controller ({tree.reasons.get(controller, 'not enabled')})"
    return None


def check_host_support(
    requested: Requested,
    cgroups: CgroupOptions | None,
    tree: CgroupTree | None,
    isolation: IsolationPolicy,
    *,
    euid: int | None = None,
) -> list[str]:
    """Raise ``ConfigError`` for the first explicit option this host cannot
    honour; otherwise return the warnings for defaults it cannot honour (one
    line each). ``tree``: the daemon's cgroup subtree as discovered (None with
    --no-cgroups); ``euid``: the daemon's effective uid (default: this process's)."""
    euid = os.geteuid() if euid is None else euid
    if requested.pids_max and (why := _controller_missing(tree, "pids")) is not None:
        raise ConfigError(
            f"--pids-max {requested.pids_max} cannot be enforced on this host: {why}; "
            "fix that, or give --pids-max 0 to run jobs without a process cap"
        )
    if requested.io_devices and (why := _controller_missing(tree, "io")) is not None:
        raise ConfigError(
            f"--io-device cannot be used on this host: {why}; fix that, or drop --io-device "
            "(io limits are then refused per job)"
        )
    if requested.cgroup_root and (tree is None or not tree.enabled):
        why = "cgroups are off (--no-cgroups)" if tree is None else str(tree.disabled_reason)
        raise ConfigError(f"--cgroup-root cannot be used: {why}")
    if requested.rootfs and isolation.rootfs is not None:
        rootfs = Path(isolation.rootfs)
        if not rootfs.is_dir():
            raise ConfigError(f"--rootfs {rootfs} is not a directory: give a root filesystem")
    if requested.run_as and isolation.run_as is not None and euid != 0:
        uid, gid = isolation.run_as
        if (uid, gid) != (euid, os.getegid()):
            raise ConfigError(
                f"--run-as {uid}:{gid} needs the daemon to run as root (it runs as uid {euid}): "
                "start it as root, or drop --run-as"
            )
    warnings = []
    if tree is not None and not tree.enabled:
        warnings.append(
            f"cgroups disabled: {tree.disabled_reason}; jobs run without resource control "
            "and every limit a client asks for is refused"
        )
    elif tree is not None:
        by_reason: dict[str, list[str]] = {}
        for controller, reason in sorted(tree.reasons.items()):
            by_reason.setdefault(reason, []).append(controller)
        missing = [f"no {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
        if missing:
            warnings.append(
                f"cgroups at {tree.path} lack controllers ({'; '.join(missing)}); limits "
                "that need them are refused"
            )
    default_pids_max = cgroups.pids_max if cgroups is not None else None
    if (
        requested.pids_max is None
        and default_pids_max is not None
        and tree is not None
        and (why := _controller_missing(tree, "pids")) is not None
    ):
        warnings.append(
            f"the default --pids-max {default_pids_max} is not enforced: {why}; "
            "a job's processes are not capped"
        )
    return warnings

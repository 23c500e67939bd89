"""The kernel tier: tests that need a real cgroup v2 kernel with every controller.

``scripts/test-kernel.sh`` runs them inside a virtme-ng VM with
``RUND_KERNEL_TIER=1``; there a missing requirement *fails* the test. Anywhere
else (the normal host suite) the same tests are skipped, so collecting them is
harmless.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from rund_trio.cgroups.devices import IoDevice, parse_io_device
from rund_trio.cgroups.discovery import read_controllers, read_location
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki
from tests.kernel.daemon import ForkServer, start_kernel_daemon

REQUIRED_CONTROLLERS = {"cpu", "memory", "io", "pids"}
CGROUP2 = Path("/sys/fs/cgroup")
DISK = Path("/dev/vda")
PIDS_MAX = 32
DAEMON_PIDS_MAX = 64
"""pids.max of every job of the daemon the daemon-level tests drive."""


def in_kernel_tier() -> bool:
    return os.environ.get("RUND_KERNEL_TIER") == "1"


def require(ok: bool, reason: str) -> None:
    """Skip the test when ``ok`` is false, or fail it inside the kernel tier."""
    if ok:
        return
    if in_kernel_tier():
        pytest.fail(f"kernel tier requirement not met: {reason}", pytrace=False)
    pytest.skip(reason)


def kernel_problem() -> str | None:
    """Why this machine cannot run the kernel tier, or None."""
    if os.geteuid() != 0:
        return "needs root"
    loc = read_location()
    if loc is None:
        return "no cgroup v2 hierarchy"
    if loc.mount.mount_point != CGROUP2:
        return f"cgroup2 is mounted at {loc.mount.mount_point}, not {CGROUP2} (a v1/v2 hybrid)"
    missing = REQUIRED_CONTROLLERS - read_controllers(CGROUP2)
    if missing:
        return "cgroup2 lacks the controllers " + " ".join(sorted(missing))
    return None


def has_disk() -> bool:
    return DISK.exists() and stat.S_ISBLK(DISK.stat().st_mode)


@pytest.fixture
def disk() -> tuple[Path, IoDevice]:
    """The VM's scratch disk (``--disk``) for io.max tests: its path and number."""
    require(has_disk(), f"{DISK} is not a block device (the VM has no --disk)")
    return DISK, parse_io_device(str(DISK))


@pytest.fixture(autouse=True)
def _kernel_only() -> None:
    problem = kernel_problem()
    require(problem is None, problem or "")


_counter = iter(range(10**6))


@pytest.fixture
def subtree_root() -> Iterator[Path]:
    """A fresh, empty directory for one test's subtree: /sys/fs/cgroup/kt-<n>."""
    root = CGROUP2 / f"kt-{os.getpid()}-{next(_counter)}"
    yield root
    for sub, dirs, _files in os.walk(root, topdown=False):
        for d in dirs:
            os.rmdir(os.path.join(sub, d))
    if root.exists():
        os.rmdir(root)


@pytest.fixture
async def tree(subtree_root: Path) -> AsyncIterator[CgroupTree]:
    """A CgroupTree on the real kernel; every leaf is killed and removed afterwards."""
    devices = (parse_io_device(str(DISK)),) if has_disk() else ()
    t = CgroupTree.discover(CgroupOptions(root=subtree_root, io_devices=devices, pids_max=PIDS_MAX))
    assert t.controllers == REQUIRED_CONTROLLERS, t.describe()
    try:
        yield t
    finally:
        await t.remove_all()
        t.close()


def remove_cgroup_tree(root: Path) -> None:
    """Kill whatever is left below ``root`` and remove it, deepest first: the
    safety net after a test (a daemon that works leaves nothing behind)."""
    if not root.exists():
        return
    with contextlib.suppress(OSError):
        (root / "cgroup.kill").write_text("1")  # the whole subtree, atomically
    for sub, dirs, _files in os.walk(root, topdown=False):
        for d in dirs:
            _rmdir_when_empty(Path(sub, d))
    _rmdir_when_empty(root)


def _rmdir_when_empty(cg: Path) -> None:
    deadline = time.monotonic() + 10  # killed processes leave asynchronously
    while True:
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.fixture
def daemon_cgroup_root() -> Iterator[Path]:
    """A fresh cgroup subtree for one test's daemon: /sys/fs/cgroup/rund-kt-<hex>."""
    root = CGROUP2 / f"rund-kt-{secrets.token_hex(4)}"
    yield root
    remove_cgroup_tree(root)


@pytest.fixture
async def kernel_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, daemon_cgroup_root: Path
) -> Daemon:
    """A daemon in the test's nursery as it would run on this machine: default
    isolation (new PID, mount, UTS, IPC namespaces), every job in a leaf of
    ``daemon_cgroup_root`` with pids.max 64, io limits on the scratch disk."""
    devices = (parse_io_device(str(DISK)),) if has_disk() else ()
    options = CgroupOptions(root=daemon_cgroup_root, io_devices=devices, pids_max=DAEMON_PIDS_MAX)
    daemon = await start_kernel_daemon(nursery, pki, tmp_path, options)
    enabled = (daemon_cgroup_root / "cgroup.subtree_control").read_text().split()
    assert set(enabled) == REQUIRED_CONTROLLERS, enabled
    return daemon


@pytest.fixture
async def host_kernel_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, daemon_cgroup_root: Path
) -> Daemon:
    """``kernel_daemon`` with host jobs (not contained): only they may open
    the host's disks, as an administrator's job reading a disk would."""
    devices = (parse_io_device(str(DISK)),) if has_disk() else ()
    options = CgroupOptions(root=daemon_cgroup_root, io_devices=devices, pids_max=DAEMON_PIDS_MAX)
    return await start_kernel_daemon(
        nursery, pki, tmp_path, options, isolation=IsolationPolicy(default_profile=Profile.HOST)
    )


@pytest.fixture(scope="session", autouse=True)
def fork_server() -> Iterator[ForkServer | None]:
    """The daemon fork server (``tests.kernel.daemon``), forked at the first
    kernel test's set-up: outside any trio run, before trio started threads."""
    if kernel_problem() is not None:
        yield None
        return
    server = ForkServer()
    yield server
    server.close()

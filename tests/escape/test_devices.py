"""A contained root job cannot read the host's disks: there is no disk in its
/dev, and a node it makes for one gives no access."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.escape.conftest import Target, run_job


def host_disk() -> tuple[str, int, int]:
    """A block device of the host: its name, major and minor."""
    for entry in sorted(Path("/sys/class/block").iterdir()):
        if entry.name.startswith(("loop", "ram")) or not Path("/dev", entry.name).exists():
            continue
        major, minor = (entry / "dev").read_text().split(":")
        return entry.name, int(major), int(minor)
    pytest.skip("this host has no block device to aim at")


async def test_dev_holds_only_the_minimal_set(target: Target) -> None:
    """Layer: minimal /dev (a tmpfs of its own, not the host's devtmpfs)."""
    done = await run_job(target.daemon, "ls /dev")
    expected = "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    assert done.stdout.split() == expected.split(" ")


async def test_opening_the_hosts_disk_fails(target: Target) -> None:
    """Layer: minimal /dev (the node is not there)."""
    name, _, _ = host_disk()
    done = await run_job(target.daemon, f"head -c 512 /dev/{name} | wc -c; true")
    assert done.stdout.split() == ["0"]
    assert "No such file" in done.stderr


async def test_a_node_made_for_the_hosts_disk_cannot_be_made_or_opened(target: Target) -> None:
    """Layers: user namespace (mknod of a device needs CAP_MKNOD in the host's
    user namespace), nodev (/tmp, and every mount of the host's tree), and a
    read-only /dev."""
    _, major, minor = host_disk()
    done = await run_job(
        target.daemon,
        f"mknod /tmp/disk b {major} {minor} && echo MADE; "
        f"mknod /dev/disk b {major} {minor} && echo MADE-IN-DEV; "
        "head -c 512 /tmp/disk | wc -c; true",
    )
    assert "MADE" not in done.stdout
    assert done.stdout.split() == ["0"]


async def test_a_device_node_already_on_the_host_tree_does_not_open(
    target: Target, job_visible_dir: Path
) -> None:
    """Layer: nodev (the host's tree is mounted nodev, recursively): a disk
    node left anywhere on the host's file system is useless to the job."""
    _, major, minor = host_disk()
    node = job_visible_dir / "disk"
    os.mknod(node, 0o666 | stat.S_IFBLK, os.makedev(major, minor))
    done = await run_job(target.daemon, f"head -c 512 {node} | wc -c; true")
    assert done.stdout.split() == ["0"]
    assert "Permission denied" in done.stderr

"""Finding the cgroup2 mount and the process's cgroup from /proc text."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from rund_trio.cgroups.discovery import (
    Cgroup2Mount,
    locate,
    parse_controllers,
    parse_mountinfo,
    parse_proc_cgroup,
    read_controllers,
    read_location,
)

# This machine's layout: cgroup v1 controllers plus an empty cgroup2 on .../unified.
HYBRID_MOUNTINFO = """\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_PROC_CGROUP = """\
9:name=systemd:/
4:memory:/process_api/e8735c9bd2d8e5ce4b5e6b41df4ba935
1:cpu:/
0::/
"""
PURE_V2_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
V1_ONLY_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
"""


def test_hybrid_finds_unified_and_root_cgroup() -> None:
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert mounts == [Cgroup2Mount(Path("/sys/fs/cgroup/unified"), PurePosixPath("/"))]
    loc = locate(mounts, parse_proc_cgroup(HYBRID_PROC_CGROUP))
    assert loc is not None
    assert loc.path == Path("/sys/fs/cgroup/unified")
    assert loc.cgroup == PurePosixPath("/")


def test_pure_v2_service_cgroup() -> None:
    mounts = parse_mountinfo(PURE_V2_MOUNTINFO)
    loc = locate(mounts, parse_proc_cgroup("0::/system.slice/rund.service\n"))
    assert loc is not None
    assert loc.mount.mount_point == Path("/sys/fs/cgroup")
    assert loc.path == Path("/sys/fs/cgroup/system.slice/rund.service")


def test_no_cgroup2_at_all() -> None:
    assert parse_mountinfo(V1_ONLY_MOUNTINFO) == []
    assert locate([], PurePosixPath("/")) is None
    assert parse_proc_cgroup("4:memory:/x\n1:cpu:/\n") is None
    mounts = parse_mountinfo(PURE_V2_MOUNTINFO)
    assert locate(mounts, None) is None


def test_escaped_mount_point_and_optional_fields() -> None:
    text = "50 22 0:40 / /mnt/my\\040cgroups rw shared:9 master:2 - cgroup2 none rw\n"
    assert parse_mountinfo(text)[0].mount_point == Path("/mnt/my cgroups")


def test_malformed_lines_are_skipped() -> None:
    assert parse_mountinfo("garbage\n1 2 3\n\n") == []


def test_deleted_suffix_and_empty_path() -> None:
    assert parse_proc_cgroup("0::/a/b (deleted)\n") == PurePosixPath("/a/b")
    assert parse_proc_cgroup("0::\n") == PurePosixPath("/")


def test_bind_mounted_subtree() -> None:
    """A container's cgroupfs whose top is the host's /docker/abc."""
    text = "60 50 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    loc = locate(parse_mountinfo(text), PurePosixPath("/docker/abc/job"))
    assert loc is not None
    assert loc.path == Path("/sys/fs/cgroup/job")
    assert locate(parse_mountinfo(text), PurePosixPath("/elsewhere")) is None


def test_root_mount_preferred_over_bind_mount() -> None:
    text = (
        "60 50 0:30 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n"
        "61 50 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    loc = locate(parse_mountinfo(text), PurePosixPath("/sub/x"))
    assert loc is not None
    assert loc.path == Path("/sys/fs/cgroup/sub/x")


def test_controllers(tmp_path: Path) -> None:
    assert parse_controllers("cpuset cpu io memory pids\n") == {
        "cpuset",
        "cpu",
        "io",
        "memory",
        "pids",
    }
    assert parse_controllers("\n") == frozenset()
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert read_controllers(tmp_path) == {"cpu", "memory"}
    assert read_controllers(tmp_path / "missing") == frozenset()


def test_read_location_on_this_machine() -> None:
    loc = read_location()
    if loc is not None:  # a machine without cgroup2 returns None, which is fine too
        assert (loc.path / "cgroup.procs").exists()

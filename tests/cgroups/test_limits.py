"""Limits: validation, controllers needed, and the exact cgroup file writes."""

from __future__ import annotations

import pytest

from rund_trio.cgroups.devices import IoDevice
from rund_trio.cgroups.limits import (
    LimitConfig,
    Limits,
    check_controllers,
    limit_writes,
    required_controllers,
    validate_limits,
)
from rund_trio.errors import FailedPrecondition, InvalidRequest, Unsupported

ALL_FILES = frozenset(
    {"cpu.max", "memory.max", "memory.swap.max", "memory.oom.group", "io.max", "pids.max"}
)
CONFIG = LimitConfig(cpus=2, io_devices=(IoDevice(8, 0), IoDevice(259, 0)), pids_max=512)


def test_full_writes_in_order() -> None:
    limits = Limits(
        cpu_quota_us=20000,
        memory_bytes=64 << 20,
        io_rbps=1 << 20,
        io_wbps=2 << 20,
        io_riops=100,
        io_wiops=200,
    )
    assert limit_writes(limits, CONFIG, ALL_FILES) == [
        ("pids.max", "512"),
        ("cpu.max", "20000 100000"),
        ("memory.max", "67108864"),
        ("memory.swap.max", "0"),
        ("memory.oom.group", "1"),
        ("io.max", "8:0 rbps=1048576 wbps=2097152 riops=100 wiops=200"),
        ("io.max", "259:0 rbps=1048576 wbps=2097152 riops=100 wiops=200"),
    ]


def test_only_set_io_keys_and_optional_files() -> None:
    limits = Limits(memory_bytes=1 << 30, io_wiops=50)
    files = frozenset({"memory.max", "io.max"})  # no swap accounting, old kernel, no pids
    assert limit_writes(limits, CONFIG, files) == [
        ("memory.max", "1073741824"),
        ("io.max", "8:0 wiops=50"),
        ("io.max", "259:0 wiops=50"),
    ]


def test_no_limits_only_pids_default() -> None:
    assert limit_writes(Limits(), CONFIG, ALL_FILES) == [("pids.max", "512")]
    no_pids = LimitConfig(cpus=2, pids_max=None)
    assert limit_writes(Limits(), no_pids, ALL_FILES) == []
    assert Limits().is_empty and not Limits(io_rbps=1).is_empty


def test_valid_limits_pass() -> None:
    validate_limits(Limits(cpu_quota_us=1000), CONFIG)
    validate_limits(Limits(cpu_quota_us=200000, memory_bytes=1, io_riops=2**32 - 2), CONFIG)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(cpu_quota_us=999), "cpu limit must be between 1000 and 200000 µs"),
        (Limits(cpu_quota_us=0), "cpu limit must be between 1000 and 200000 µs"),
        (Limits(cpu_quota_us=200001), "got 200001"),
        (Limits(memory_bytes=0), "memory limit must be between 1 and 9223372036854775807 bytes"),
        (Limits(io_rbps=0), "io rbps limit must be between 1 and"),
        (Limits(io_wbps=0), "io wbps limit must be between 1 and"),
        (Limits(io_riops=0), "io riops limit must be between 1 and 4294967294"),
        (Limits(io_wiops=2**32 - 1), "io wiops limit must be between 1 and 4294967294"),
        (Limits(memory_bytes=2**64 - 1), "memory limit must be between"),
    ],
)
def test_invalid_limits(limits: Limits, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_limits(limits, CONFIG)


def test_cpu_range_follows_cpu_count() -> None:
    with pytest.raises(InvalidRequest, match=r"between 1000 and 100000 µs .*all 1 CPUs"):
        validate_limits(Limits(cpu_quota_us=150000), LimitConfig(cpus=1))


def test_io_limits_without_devices() -> None:
    with pytest.raises(InvalidRequest, match="--io-device"):
        validate_limits(Limits(io_rbps=1000), LimitConfig(cpus=2))


def test_required_controllers() -> None:
    assert required_controllers(Limits()) == {}
    assert set(required_controllers(Limits(cpu_quota_us=5000, io_wbps=1))) == {"cpu", "io"}


def test_missing_controller_is_unsupported() -> None:
    limits = Limits(cpu_quota_us=5000, memory_bytes=1 << 20)
    with pytest.raises(Unsupported) as info:
        check_controllers(limits, {"cpu"}, "/sys/fs/cgroup/unified/rund-trio")
    msg = str(info.value)
    assert "the 'memory' controller is not available in /sys/fs/cgroup/unified/rund-trio" in msg
    assert isinstance(info.value, FailedPrecondition)
    with pytest.raises(Unsupported, match=r"'io' controller .* \(bound to v1\)"):
        check_controllers(Limits(io_rbps=5), set(), "/x", {"io": "bound to v1"})
    check_controllers(limits, {"cpu", "memory"}, "/x")
    check_controllers(Limits(), set(), "/x")

"""A job's resource limits, their validation, and the cgroup files they become.

Sans-I/O: ``Limits`` is a plain value; ``validate_limits`` and
``check_controllers`` raise the project's errors; ``limit_writes`` turns limits
into the exact ``(file, text)`` writes for a job's leaf cgroup. ``CgroupTree``
performs them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from rund_trio.cgroups.devices import IoDevice
from rund_trio.errors import InvalidRequest, Unsupported

__all__ = [
    "CPU_PERIOD_US",
    "DEFAULT_PIDS_MAX",
    "MAX_BPS",
    "MAX_IOPS",
    "MAX_MEMORY_BYTES",
    "MIN_CPU_QUOTA_US",
    "LimitConfig",
    "Limits",
    "check_controllers",
    "limit_writes",
    "required_controllers",
    "validate_limits",
]

CPU_PERIOD_US = 100_000
"""cpu.max's period: a quota of 100000 is one whole CPU."""
MIN_CPU_QUOTA_US = 1_000
"""The kernel refuses cpu.max quotas below 1 ms."""
MAX_MEMORY_BYTES = 2**63 - 1
MAX_BPS = 2**63 - 1
MAX_IOPS = 2**32 - 2
"""io.max keeps iops in 32 bits and reads 2**32 - 1 as "max" (no limit)."""
DEFAULT_PIDS_MAX = 4096
"""pids.max of every job unless configured otherwise: stops fork bombs."""


@dataclass(frozen=True)
class Limits:
    """The limits one job asked for; None means "no limit"."""

    cpu_quota_us: int | None = None
    """CPU time per 100000 µs period (cpu.max); 100000 is one whole CPU."""
    memory_bytes: int | None = None
    """memory.max; swap is turned off for the job where the kernel has swap accounting."""
    io_rbps: int | None = None
    io_wbps: int | None = None
    io_riops: int | None = None
    io_wiops: int | None = None

    @property
    def has_io(self) -> bool:
        return any(v is not None for _key, v in self._io_items())

    @property
    def is_empty(self) -> bool:
        return self.cpu_quota_us is None and self.memory_bytes is None and not self.has_io

    def _io_items(self) -> list[tuple[str, int | None]]:
        return [
            ("rbps", self.io_rbps),
            ("wbps", self.io_wbps),
            ("riops", self.io_riops),
            ("wiops", self.io_wiops),
        ]


@dataclass(frozen=True)
class LimitConfig:
    """The daemon's side of limits: what the machine has and what every job gets."""

    cpus: int
    """CPUs the daemon may hand out: bounds the cpu quota at cpus * 100000."""
    io_devices: tuple[IoDevice, ...] = ()
    """Devices io limits apply to; io limits are refused when empty."""
    pids_max: int | None = DEFAULT_PIDS_MAX
    """pids.max for every job where the pids controller is available; None leaves "max"."""


def _check_range(what: str, value: int | None, low: int, high: int, unit: str) -> None:
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"{what} must be between {low} and {high} {unit}, got {value}")


def validate_limits(limits: Limits, config: LimitConfig) -> None:
    """Raise ``InvalidRequest`` naming the allowed range if ``limits`` is malformed.

    Zero is never a valid limit (an unset field means "no limit"). The cpu
    quota must lie in [1000, 100000 * cpus] µs per 100000 µs period. io limits
    need at least one configured io device.
    """
    max_quota = CPU_PERIOD_US * max(1, config.cpus)
    if limits.cpu_quota_us is not None and not (
        MIN_CPU_QUOTA_US <= limits.cpu_quota_us <= max_quota
    ):
        raise InvalidRequest(
            f"cpu limit must be between {MIN_CPU_QUOTA_US} and {max_quota} µs of CPU time "
            f"per {CPU_PERIOD_US} µs period (1% of one CPU to all {config.cpus} CPUs), "
            f"got {limits.cpu_quota_us}"
        )
    _check_range("memory limit", limits.memory_bytes, 1, MAX_MEMORY_BYTES, "bytes")
    _check_range("io rbps limit", limits.io_rbps, 1, MAX_BPS, "bytes per second")
    _check_range("io wbps limit", limits.io_wbps, 1, MAX_BPS, "bytes per second")
    _check_range("io riops limit", limits.io_riops, 1, MAX_IOPS, "operations per second")
    _check_range("io wiops limit", limits.io_wiops, 1, MAX_IOPS, "operations per second")
    if limits.has_io and not config.io_devices:
        raise InvalidRequest(
            "io limits need a block device to apply to, and this daemon has none "
            "configured (start it with --io-device MAJ:MIN or --io-device /dev/NAME)"
        )


def required_controllers(limits: Limits) -> dict[str, str]:
    """The cgroup controllers ``limits`` needs, each with the limit that needs it."""
    needed: dict[str, str] = {}
    if limits.cpu_quota_us is not None:
        needed["cpu"] = "cpu limit"
    if limits.memory_bytes is not None:
        needed["memory"] = "memory limit"
    if limits.has_io:
        needed["io"] = "io limits"
    return needed


def check_controllers(
    limits: Limits,
    available: Collection[str],
    where: Path | str,
    reasons: Mapping[str, str] | None = None,
) -> None:
    """Raise ``Unsupported`` if a controller ``limits`` needs is not in ``available``.

    ``where`` is the cgroup the jobs' leaves live in; ``reasons`` may say why a
    controller is missing there (e.g. enabling it failed), and is appended.
    """
    for controller, what in required_controllers(limits).items():
        if controller not in available:
            reason = (reasons or {}).get(controller)
            raise Unsupported(
                f"cannot enforce the {what}: the {controller!r} controller is not available "
                f"in {where}" + (f" ({reason})" if reason else "")
            )


def limit_writes(
    limits: Limits, config: LimitConfig, files: Collection[str]
) -> list[tuple[str, str]]:
    """The writes that apply ``limits`` to a fresh leaf, in order.

    ``files`` names the interface files the leaf has, so optional ones
    (``memory.swap.max`` without swap accounting, ``memory.oom.group`` on old
    kernels, ``pids.max`` without the pids controller) are only written where
    they exist. Each io.max write configures one device with only the keys set.
    """
    writes: list[tuple[str, str]] = []
    if config.pids_max is not None and "pids.max" in files:
        writes.append(("pids.max", str(config.pids_max)))
    if limits.cpu_quota_us is not None:
        writes.append(("cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}"))
    if limits.memory_bytes is not None:
        writes.append(("memory.max", str(limits.memory_bytes)))
        if "memory.swap.max" in files:
            writes.append(("memory.swap.max", "0"))
        if "memory.oom.group" in files:
            writes.append(("memory.oom.group", "1"))
    io_keys = " ".join(f"{k}={v}" for k, v in limits._io_items() if v is not None)
    if io_keys:
        for device in config.io_devices:
            writes.append(("io.max", f"{device} {io_keys}"))
    return writes

"""The capabilities of a contained job: which it keeps, and dropping the rest.

A contained job keeps at most Docker's default set, narrowed further:

- kept: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
  SYS_CHROOT, SETFCAP, and NET_BIND_SERVICE only with a network of its own;
- dropped although Docker keeps them: NET_RAW (with the host's network, a raw
  or packet socket sees and forges every other client's traffic on the host's
  interfaces; ``ping`` uses ICMP datagram sockets without it), MKNOD (a
  device node is a way to the host's disks; the job's /dev is made for it),
  AUDIT_WRITE (a job has no login to record in the host's audit log), and
  NET_BIND_SERVICE with the host's network (a job must not squat the host's
  privileged ports, where the host's own services are expected).

``confine`` applies that to the calling process; it is imported by the
``execute`` helper and the fork server, so it imports nothing but
``rund_trio.isolation.linux`` (built-in modules, ``_ctypes``).
"""

from __future__ import annotations

import _ctypes
import posix
import sys

from rund_trio.isolation import linux

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from typing import Any

CHOWN = 0
DAC_OVERRIDE = 1
FOWNER = 3
FSETID = 4
KILL = 5
SETGID = 6
SETUID = 7
SETPCAP = 8
NET_BIND_SERVICE = 10
NET_RAW = 13
SYS_CHROOT = 18
MKNOD = 27
AUDIT_WRITE = 29
SETFCAP = 31

NAMES = {
    0: "CHOWN",
    1: "DAC_OVERRIDE",
    2: "DAC_READ_SEARCH",
    3: "FOWNER",
    4: "FSETID",
    5: "KILL",
    6: "SETGID",
    7: "SETUID",
    8: "SETPCAP",
    9: "LINUX_IMMUTABLE",
    10: "NET_BIND_SERVICE",
    11: "NET_BROADCAST",
    12: "NET_ADMIN",
    13: "NET_RAW",
    14: "IPC_LOCK",
    15: "IPC_OWNER",
    16: "SYS_MODULE",
    17: "SYS_RAWIO",
    18: "SYS_CHROOT",
    19: "SYS_PTRACE",
    20: "SYS_PACCT",
    21: "SYS_ADMIN",
    22: "SYS_BOOT",
    23: "SYS_NICE",
    24: "SYS_RESOURCE",
    25: "SYS_TIME",
    26: "SYS_TTY_CONFIG",
    27: "MKNOD",
    28: "LEASE",
    29: "AUDIT_WRITE",
    30: "AUDIT_CONTROL",
    31: "SETFCAP",
    32: "MAC_OVERRIDE",
    33: "MAC_ADMIN",
    34: "SYSLOG",
    35: "WAKE_ALARM",
    36: "BLOCK_SUSPEND",
    37: "AUDIT_READ",
    38: "PERFMON",
    39: "BPF",
    40: "CHECKPOINT_RESTORE",
}

DOCKER_DEFAULT = frozenset(
    {
        CHOWN,
        DAC_OVERRIDE,
        FOWNER,
        FSETID,
        KILL,
        SETGID,
        SETUID,
        SETPCAP,
        NET_BIND_SERVICE,
        NET_RAW,
        SYS_CHROOT,
        MKNOD,
        AUDIT_WRITE,
        SETFCAP,
    }
)
"""Docker's default capability set, the upper bound of a contained job's."""

_KEPT = (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, SYS_CHROOT, SETFCAP)

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522
_EINVAL = 22
_EPERM = 1


def contained_set(*, own_network: bool) -> int:
    """The capability mask a contained job keeps (bit N: capability N)."""
    kept = _KEPT + ((NET_BIND_SERVICE,) if own_network else ())
    return sum(1 << cap for cap in kept)


def names(mask: int) -> list[str]:
    """The names of the capabilities in ``mask``, lowest first."""
    return [NAMES.get(cap, str(cap)) for cap in range(64) if mask >> cap & 1]


def _last_cap() -> int:
    try:
        fd = posix.open("/proc/sys/kernel/cap_last_cap", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return 63  # no /proc: try them all (EINVAL for those the kernel lacks)
    try:
        return int(posix.read(fd, 16))
    finally:
        posix.close(fd)


# Made once at import (in the fork server: once for every job), as a job's
# start pays for every object its child creates or first touches.
_LAST_CAP = _last_cap()
_ZERO = linux._ULong(0)
_NUMBERS = tuple(linux._ULong(number) for number in range(64))
_CAPBSET_DROP = linux._Int(_PR_CAPBSET_DROP)
_CAP_AMBIENT = linux._Int(_PR_CAP_AMBIENT)
_capget = linux._IntFunction(("capget", linux._libc))  # type: ignore[arg-type]
_capset = linux._IntFunction(("capset", linux._libc))  # type: ignore[arg-type]
_header: Any = (linux._Char * 8)()  # struct __user_cap_header_struct; pid 0: this thread
_header.raw = _CAP_VERSION_3.to_bytes(4, sys.byteorder)
_data: Any = (linux._Char * 24)()  # struct __user_cap_data_struct[2]


def _prctl(option: Any, arg: Any) -> int:
    result = linux._prctl(option, arg, _ZERO, _ZERO, _ZERO)
    return 0 if result >= 0 else _ctypes.get_errno() or _EINVAL


def current() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) masks."""
    linux._check(_capget(_header, _data))
    raw = bytes(_data.raw)
    words = [int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, 24, 4)]
    return (
        words[0] | words[3] << 32,
        words[1] | words[4] << 32,
        words[2] | words[5] << 32,
    )


def _set(effective: int, permitted: int, inheritable: int) -> None:
    raw = b""
    for shift in (0, 32):
        for mask in (effective, permitted, inheritable):
            raw += (mask >> shift & 0xFFFFFFFF).to_bytes(4, sys.byteorder)
    _data.raw = raw
    linux._check(_capset(_header, _data))


def confine(keep: int) -> None:
    """Narrow every capability set of this process to ``keep``: the bounding
    set (what any later exec can ever get), the ambient set (cleared), the
    effective and permitted sets; the inheritable set is emptied (as Docker
    does since CVE-2022-24769: inheritable capabilities meet a program's file
    capabilities across an exec). Raises ``OSError``.

    Call it after every step that needs more (mounts, unshares) and before
    the change of credentials, which needs only SETUID and SETGID (kept): a
    process that leaves uid 0 loses its permitted and effective sets, and
    dropping from the bounding set needs SETPCAP in the effective set.

    A process without SETPCAP (a daemon not run as root) cannot shrink its
    bounding set; that is accepted only when its permitted set is within
    ``keep`` already: with ``no_new_privs`` (``seccomp.install``) no exec can
    raise it to the bounding set."""
    for cap in range(_LAST_CAP + 1):
        if keep >> cap & 1:
            continue
        error = _prctl(_CAPBSET_DROP, _NUMBERS[cap])
        if error == _EPERM:
            if current()[1] & ~keep:
                raise OSError(_EPERM, "cannot drop capabilities from the bounding set")
            break
        if error and error != _EINVAL:  # EINVAL: a capability this kernel lacks
            raise OSError(error, posix.strerror(error))
    error = _prctl(_CAP_AMBIENT, _NUMBERS[_PR_CAP_AMBIENT_CLEAR_ALL])
    if error and error != _EINVAL:  # EINVAL: a kernel before 4.3 has no ambient set
        raise OSError(error, posix.strerror(error))
    effective, permitted, _ = current()
    _set(effective & keep, permitted & keep, 0)

"""The seccomp filter of a contained job: which system calls answer EPERM.

The filter allows everything except what lets a process reach beyond its job,
in the spirit of Docker's default profile (which denies by default and allows
~350 calls; a deny list is shorter to review and keeps new harmless calls
working). It is built once per variant in the daemon with libseccomp
(``pyseccomp``, which wraps the system's ``libseccomp.so.2`` through
``ctypes``), exported as the kernel's BPF and sent to the job's process in its
spec; the process then only has to ``install`` it (``prctl``), so neither the
helper nor the fork server loads libseccomp per job.

Every denied call answers ``EPERM`` (``clone3``: ``ENOSYS``, see below), the
error a program gets for a missing capability, so programs that probe
degrade as they would in a container. The list and the reasons, in
``DENIED``, are what the README's "seccomp" subsection shows.
"""

from __future__ import annotations

import _ctypes
import posix
import sys

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_EPERM = 1
_EINVAL = 22
_ENOSYS = 38

MOUNTS = "mount tables: uncovering or over-mounting what the daemon hides, remounting the host"
KERNEL_CODE = "running code in the kernel"
KEYRING = "the kernel keyring is not namespaced: another job's or the host's keys"
MACHINE = "the whole machine: its power, swap, accounting, quotas, console, kernel log"
CLOCK = "the clock is the host's (time namespaces do not cover setting it)"
HANDLES = "opening files by handle bypasses every mount and path check"
NAMESPACES = "a new user namespace hands back every capability; others escape the job's"
SURFACE = "a large kernel attack surface no ordinary job needs"
TRACING = "reading or changing another process's memory outside a PID namespace"

DENIED: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsmount",
            "fsconfig",
            "fspick",
            "mount_setattr",
        ),
        MOUNTS,
    ),
    **dict.fromkeys(
        (
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "bpf",
        ),
        KERNEL_CODE,
    ),
    **dict.fromkeys(("keyctl", "add_key", "request_key"), KEYRING),
    **dict.fromkeys(
        (
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "quotactl_fd",
            "vhangup",
            "syslog",
            "iopl",
            "ioperm",
            "_sysctl",
            "nfsservctl",
            "uselib",
            "lookup_dcookie",
            "get_kernel_syms",
            "query_module",
            "vm86",
            "vm86old",
        ),
        MACHINE,
    ),
    **dict.fromkeys(
        (
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
            "adjtimex",
        ),
        CLOCK,
    ),
    **dict.fromkeys(("open_by_handle_at", "name_to_handle_at"), HANDLES),
    "setns": NAMESPACES,
    **dict.fromkeys(
        (
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "fanotify_init",
        ),
        SURFACE,
    ),
}
"""Denied outright (``EPERM``), with the reason."""

TRACE_CALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd")
"""Denied unless the job has a PID namespace of its own, where every process
it can name is its own (``rund-init`` keeps more capabilities than the job, so
the kernel refuses to let the job trace it)."""

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
"""``unshare`` and ``clone`` with any of these (``unshare`` also with
``CLONE_NEWTIME``, whose bit is part of ``clone``'s exit signal) answer
``EPERM``. ``clone3`` passes its flags in memory, which seccomp cannot read,
so it answers ``ENOSYS``, as under Docker: the C library then falls back to
``clone``, whose flags are checked."""

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_INSTRUCTION = 8  # struct sock_filter

_programs: dict[bool, bytes] = {}


class FilterUnavailable(Exception):
    """libseccomp cannot build the filter on this host."""


def program(*, allow_tracing: bool) -> bytes:
    """The filter as the kernel's BPF (cached per variant): ``TRACE_CALLS``
    allowed or not. Raises ``FilterUnavailable`` with a reason a person
    understands when libseccomp is missing or refuses a rule."""
    cached = _programs.get(allow_tracing)
    if cached is None:
        cached = _programs[allow_tracing] = _build(allow_tracing)
    return cached


def _build(allow_tracing: bool) -> bytes:
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as error:  # RuntimeError: no libseccomp
        raise FilterUnavailable(
            f"libseccomp is not usable ({error}): install libseccomp2 and pyseccomp"
        ) from None
    try:
        denied = seccomp.ERRNO(_EPERM)
        flt = seccomp.SyscallFilter(seccomp.ALLOW)
        names = list(DENIED) + ([] if allow_tracing else list(TRACE_CALLS))
        for name in names:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if number == -1:  # a call this libseccomp does not know
                continue
            flt.add_rule(denied, number)
        flag_arg = 1 if posix.uname().machine.startswith("s390") else 0  # clone(stack, flags)
        for flag in NAMESPACE_FLAGS:
            flt.add_rule(denied, "clone", seccomp.Arg(flag_arg, seccomp.MASKED_EQ, flag, flag))
        for flag in (*NAMESPACE_FLAGS, CLONE_NEWTIME):
            flt.add_rule(denied, "unshare", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3") != -1:
            flt.add_rule(seccomp.ERRNO(_ENOSYS), "clone3")
        memfd = posix.memfd_create("rund-seccomp", posix.MFD_CLOEXEC)
        try:
            flt.export_bpf(_Fd(memfd))
            size = posix.lseek(memfd, 0, 2)  # SEEK_END
            posix.lseek(memfd, 0, 0)  # SEEK_SET
            data = b""
            while len(data) < size:
                chunk = posix.read(memfd, size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            posix.close(memfd)
    except (OSError, ValueError) as error:
        raise FilterUnavailable(f"libseccomp refused the filter: {error}") from None
    if not data or len(data) % _BPF_INSTRUCTION:
        raise FilterUnavailable(f"libseccomp exported {len(data)} bytes, not a BPF program")
    return data


class _Fd:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


_MAX_PROGRAM = 4096 * _BPF_INSTRUCTION  # BPF_MAXINSNS
_POINTER_SIZE = 8 if sys.maxsize > 2**32 else 4
_loader: tuple[Any, Any, Any, Any, Any] | None = None


def _load_parts() -> tuple[Any, Any, Any, Any, Any]:
    """The ctypes objects ``install`` needs, made once (the fork server makes
    them at start-up through ``prepare``: a job's child only fills them)."""
    global _loader
    if _loader is None:
        from rund_trio.isolation import linux

        code: Any = (linux._Char * _MAX_PROGRAM)()
        fprog: Any = (linux._Char * (2 * _POINTER_SIZE))()
        zero = linux._ULong(0)
        _loader = (code, fprog, zero, linux._ULong(1), linux._ULong(_SECCOMP_MODE_FILTER))
    return _loader


def prepare() -> None:
    """Make ``install``'s ctypes objects now (see ``_load_parts``)."""
    _load_parts()


def install(bpf: bytes) -> None:
    """Set ``no_new_privs`` and load ``bpf`` (from ``program``) as this
    process's seccomp filter, inherited by everything it forks and execs and
    never removable. Raises ``OSError`` (``EINVAL``: a kernel without seccomp
    filters). Imports only ``rund_trio.isolation.linux``."""
    from rund_trio.isolation import linux

    if not bpf or len(bpf) > _MAX_PROGRAM or len(bpf) % _BPF_INSTRUCTION:
        raise OSError(_EINVAL, f"not a BPF program of at most 4096 instructions ({len(bpf)} bytes)")
    code, fprog, zero, one, mode = _load_parts()
    linux._check(linux._prctl(linux._Int(_PR_SET_NO_NEW_PRIVS), one, zero, zero, zero))
    code.raw = bpf
    # struct sock_fprog: unsigned short len, padding to the pointer's alignment, the pointer.
    fprog.raw = (
        (len(bpf) // _BPF_INSTRUCTION).to_bytes(2, sys.byteorder)
        + bytes(_POINTER_SIZE - 2)
        + _ctypes.addressof(code).to_bytes(_POINTER_SIZE, sys.byteorder)
    )
    linux._check(linux._prctl(linux._Int(_PR_SET_SECCOMP), mode, fprog, zero, zero))

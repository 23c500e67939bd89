"""The Linux system calls Python 3.11's ``os`` lacks, through libc.

Imported only by the ``execute`` helper, and only when a job asks for
namespaces. It uses ``_ctypes`` directly: the ``ctypes`` package around it
costs the helper 4 to 7 ms more to import (a fifth of an isolated start) for
conveniences a handful of calls do not need. Every wrapper raises ``OSError``
with the C library's errno.
"""

from __future__ import annotations

import _ctypes
import posix
import sys

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWCGROUP = 0x02000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_REMOUNT = 0x20
MS_PRIVATE = 0x40000

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 0x1
_OPEN_TREE_CLOEXEC = 0o2000000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_SYS_OPEN_TREE = 428  # the same number on every architecture (new-style table)
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414
_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441
_O_RDWR = 0o2
_O_NOCTTY = 0o400
_O_CLOEXEC = 0o2000000
_ENOTTY = 25
_EINVAL = 22
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_AF_INET = 2
_SOCK_DGRAM = 2
_SOCK_CLOEXEC = 0o2000000
_IFNAMSIZ = 16


class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class _UInt(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "I"


class _Long(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "L"


class _Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "c"


class _Buffer(_ctypes.Array):  # type: ignore[type-arg]
    """40 zeroed bytes passed by address (a struct ifreq, a struct rlimit)."""

    _type_ = _Char
    _length_ = 40


class _IntFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _LongFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Long


class _Libc:
    # The interpreter links the C library: dlopen(NULL) finds its symbols.
    _handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # RTLD_NOW


_libc = _Libc()
_unshare = _IntFunction(("unshare", _libc))  # type: ignore[arg-type]
_setns = _IntFunction(("setns", _libc))  # type: ignore[arg-type]
_mount = _IntFunction(("mount", _libc))  # type: ignore[arg-type]
_umount2 = _IntFunction(("umount2", _libc))  # type: ignore[arg-type]
_sethostname = _IntFunction(("sethostname", _libc))  # type: ignore[arg-type]
_prctl = _IntFunction(("prctl", _libc))  # type: ignore[arg-type]
_socket = _IntFunction(("socket", _libc))  # type: ignore[arg-type]
_ioctl = _IntFunction(("ioctl", _libc))  # type: ignore[arg-type]
_setrlimit = _IntFunction(("setrlimit", _libc))  # type: ignore[arg-type]
_syscall = _LongFunction(("syscall", _libc))  # type: ignore[arg-type]
_RLIMIT_CORE = 4


def _check(result: int, *paths: str | None) -> None:
    if result < 0:
        code = _ctypes.get_errno()
        names = [p for p in paths if p is not None]
        raise OSError(code, posix.strerror(code), *names[:1])


def fsencode(name: str) -> bytes:
    """``os.fsencode`` without importing ``os`` (the helper's hot path does not)."""
    return name.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _path(value: str | None) -> bytes | None:
    return None if value is None else fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``CLONE_NEW*`` flags);
    with ``CLONE_NEWPID`` only its children to come are in the new one."""
    _check(_unshare(_Int(flags)))


def setns(fd: int, kind: int) -> None:
    """Move the calling process into the namespace ``fd`` refers to (a
    ``/proc/<pid>/ns/*`` file), which must be of ``kind`` (``CLONE_NEW*``).
    Into a mount namespace, the process's root and cwd become its root."""
    _check(_setns(_Int(fd), _Int(kind)))


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """``mount(2)``."""
    result = _mount(_path(source), _path(target), _path(fstype), _ULong(flags), _path(data))
    _check(result, target)


def umount2(target: str, flags: int = 0) -> None:
    """``umount2(2)``."""
    _check(_umount2(_path(target), _Int(flags)), target)


def sethostname(name: str) -> None:
    """Set the host name of the calling process's UTS namespace."""
    raw = name.encode("utf-8", "surrogateescape")
    _check(_sethostname(raw, _ULong(len(raw))))


def pivot_root(new_root: str, put_old: str) -> None:
    """``pivot_root(2)``, which the C library does not wrap."""
    number = _SYS_PIVOT_ROOT.get(posix.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown system call number on {posix.uname().machine}")
    result = _syscall(_Long(number), fsencode(new_root), fsencode(put_old))
    _check(result, new_root)


def clone_mount(path: str) -> int:
    """A detached copy of the mount tree at ``path`` (``open_tree`` with
    ``OPEN_TREE_CLONE | AT_RECURSIVE``), as a close-on-exec fd."""
    flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE
    fd = _syscall(_Long(_SYS_OPEN_TREE), _Int(_AT_FDCWD), fsencode(path), _UInt(flags))
    _check(fd, path)
    return int(fd)


def attach_mount(tree_fd: int, target: str) -> None:
    """Attach a tree from ``clone_mount`` at ``target`` (``move_mount``)."""
    result = _syscall(
        _Long(_SYS_MOVE_MOUNT),
        _Int(tree_fd),
        b"",
        _Int(_AT_FDCWD),
        fsencode(target),
        _UInt(_MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(result, target)


def disable_core_dumps() -> None:
    """``RLIMIT_CORE`` 0 (without importing ``resource``, which may be out of
    reach after pivot_root)."""
    _check(_setrlimit(_Int(_RLIMIT_CORE), _Buffer()))  # struct rlimit {0, 0}


def set_process_name(name: str) -> None:
    """The name ``ps`` shows (``comm``, at most 15 bytes); best effort."""
    _prctl(_Int(PR_SET_NAME), name.encode()[:15], _ULong(0), _ULong(0), _ULong(0))


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent ends
    (``PR_SET_PDEATHSIG``: cleared in a fork's child and by credential changes)."""
    _check(_prctl(_Int(PR_SET_PDEATHSIG), _ULong(signum), _ULong(0), _ULong(0), _ULong(0)))


def parent_death_signal() -> int:
    """This process's ``PR_SET_PDEATHSIG`` signal, 0 for none."""
    result = _Buffer()
    _check(_prctl(_Int(PR_GET_PDEATHSIG), result, _ULong(0), _ULong(0), _ULong(0)))
    return int.from_bytes(bytes(result)[:4], sys.byteorder)


def interface_up(name: str = "lo") -> None:
    """Bring a network interface up (``SIOCSIFFLAGS``), as ``ip link set lo up``."""
    raw = name.encode()
    if len(raw) >= _IFNAMSIZ:
        raise OSError(22, f"interface name too long: {name!r}")
    sock = _socket(_Int(_AF_INET), _Int(_SOCK_DGRAM | _SOCK_CLOEXEC), _Int(0))
    _check(sock)
    try:
        ifreq: Any = _Buffer()  # struct ifreq: the name, then ifr_flags (a short)
        ifreq.raw = raw
        _check(_ioctl(_Int(sock), _ULong(_SIOCGIFFLAGS), ifreq))
        flags = int.from_bytes(ifreq.raw[_IFNAMSIZ : _IFNAMSIZ + 2], sys.byteorder)
        flags |= _IFF_UP
        ifreq.raw = ifreq.raw[:_IFNAMSIZ] + flags.to_bytes(2, sys.byteorder)
        _check(_ioctl(_Int(sock), _ULong(_SIOCSIFFLAGS), ifreq))
    finally:
        posix.close(sock)


def set_controlling_terminal(fd: int) -> None:
    """Make the terminal on ``fd`` the controlling terminal of this process's
    session (``TIOCSCTTY``); the caller must lead a session without one."""
    _check(_ioctl(_Int(fd), _ULong(_TIOCSCTTY), _ULong(0)))


def open_terminal(devpts: str = "/dev/pts") -> tuple[int, int]:
    """A new pseudo-terminal of the devpts mounted at ``devpts``: (master,
    slave), both close-on-exec, neither becoming a controlling terminal.
    The slave is opened from the master (``TIOCGPTPEER``, Linux 4.13), not by
    path, so it is the master's peer whatever is mounted over ``devpts``/N;
    on older kernels by path."""
    master = posix.open(devpts + "/ptmx", _O_RDWR | _O_NOCTTY | _O_CLOEXEC)
    try:
        _check(_ioctl(_Int(master), _ULong(_TIOCSPTLCK), bytes(4)))  # unlockpt
        slave = _ioctl(_Int(master), _ULong(_TIOCGPTPEER), _ULong(_O_RDWR | _O_NOCTTY | _O_CLOEXEC))
        if slave < 0 and _ctypes.get_errno() in (_ENOTTY, _EINVAL):
            number = _Buffer()
            _check(_ioctl(_Int(master), _ULong(_TIOCGPTN), number))
            index = int.from_bytes(bytes(number)[:4], sys.byteorder)
            slave = posix.open(f"{devpts}/{index}", _O_RDWR | _O_NOCTTY | _O_CLOEXEC)
        _check(slave)
    except BaseException:
        posix.close(master)
        raise
    return master, int(slave)


def set_window_size(fd: int, winsize: bytes) -> None:
    """Set the window size of the terminal on ``fd`` (``TIOCSWINSZ``) from a
    ``struct winsize`` (8 bytes: rows, cols, x pixels, y pixels)."""
    if len(winsize) != 8:
        raise OSError(_EINVAL, f"a window size is 8 bytes, not {len(winsize)}")
    _check(_ioctl(_Int(fd), _ULong(_TIOCSWINSZ), winsize))


def set_mount_attributes(tree_fd: int, attributes: int) -> None:
    """Set ``MOUNT_ATTR_*`` flags on every mount of the tree at ``tree_fd``
    (``mount_setattr`` with ``AT_RECURSIVE``: Linux 5.12)."""
    attr = attributes.to_bytes(8, sys.byteorder) + bytes(24)  # struct mount_attr
    result = _syscall(
        _Long(_SYS_MOUNT_SETATTR),
        _Int(tree_fd),
        b"",
        _UInt(_AT_EMPTY_PATH | _AT_RECURSIVE),
        attr,
        _ULong(len(attr)),
    )
    _check(result)


def set_not_dumpable() -> None:
    """``PR_SET_DUMPABLE`` 0: no ptrace, no core, /proc/<pid> owned by root."""
    _check(_prctl(_Int(PR_SET_DUMPABLE), _ULong(0), _ULong(0), _ULong(0), _ULong(0)))

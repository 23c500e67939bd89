"""Making a directory a job's ``/``: pivot_root with /proc, a minimal /dev and
a tmpfs /tmp, the host's root detached.

Runs in the ``execute`` helper, inside the job's new mount namespace (already
made recursively private) and, with a PID namespace, as its PID 1 so that the
new /proc shows the namespace's processes. Each step raises ``SetupError``
naming itself, which the helper reports on the status fd.
"""

from __future__ import annotations

import posix

from rund_trio.isolation import linux

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from collections.abc import Callable

DEVICES = ("null", "zero", "random", "urandom", "tty")
"""Host device nodes bind-mounted into the job's /dev."""
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


class SetupError(Exception):
    """A setup step failed: ``step`` names it, ``error`` is the OS error."""

    def __init__(self, step: str, error: OSError) -> None:
        super().__init__(step, error)
        self.step = step
        self.error = error


def _mountpoint(path: str, directory: bool = True) -> None:
    """Create a missing mount point (in the root filesystem's directory)."""
    try:
        if directory:
            posix.mkdir(path, 0o755)
        else:
            posix.close(posix.open(path, posix.O_CREAT | posix.O_WRONLY | posix.O_CLOEXEC, 0o644))
    except FileExistsError:
        pass


def _is_dir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except OSError:
        return False


def _step(step: str, function: Callable[..., object], *args: object) -> None:
    try:
        function(*args)
    except OSError as error:
        raise SetupError(step, error) from None


def enter_rootfs(root: str) -> None:
    """Make ``root`` the calling process's ``/``; leaves the cwd at ``/``.

    ``root`` is bind-mounted on itself (pivot_root needs a mount point) with
    everything mounted below it; missing ``proc``, ``dev`` and ``tmp`` mount
    points are created in it. A read-only sysfs goes on ``/sys`` only if that
    directory exists.
    """
    root = root.rstrip("/")  # absolute, not "/" (validated by the daemon)
    _step("rootfs", linux.mount, root, root, None, linux.MS_BIND | linux.MS_REC)

    proc = root + "/proc"
    _step("rootfs-mkdir", _mountpoint, proc)
    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    _step("mount-proc", linux.mount, "proc", proc, "proc", nosuid_nodev_noexec)

    dev = root + "/dev"
    _step("rootfs-mkdir", _mountpoint, dev)
    _step(
        "mount-dev",
        linux.mount,
        "tmpfs",
        dev,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "mode=755,size=1m",
    )
    for name in DEVICES:
        node = dev + "/" + name
        _step("mount-dev", _mountpoint, node, False)
        _step("mount-dev", linux.mount, "/dev/" + name, node, None, linux.MS_BIND)
    for name, target in DEV_LINKS:
        _step("mount-dev", posix.symlink, target, dev + "/" + name)
    shm = dev + "/shm"
    _step("mount-dev", posix.mkdir, shm, 0o755)
    _step("mount-dev", linux.mount, "tmpfs", shm, "tmpfs", nosuid_nodev_noexec, "mode=1777")

    tmp = root + "/tmp"
    _step("rootfs-mkdir", _mountpoint, tmp)
    _step(
        "mount-tmp",
        linux.mount,
        "tmpfs",
        tmp,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV,
        "mode=1777",
    )

    sys_dir = root + "/sys"
    if _is_dir(sys_dir):
        _step(
            "mount-sys",
            linux.mount,
            "sysfs",
            sys_dir,
            "sysfs",
            nosuid_nodev_noexec | linux.MS_RDONLY,
        )

    # pivot_root(".", "."): the old root ends up stacked on the new one, and
    # a lazy unmount of "." then drops it; no put_old directory needed.
    _step("chdir", posix.chdir, root)
    _step("pivot_root", linux.pivot_root, ".", ".")
    _step("umount-oldroot", linux.umount2, ".", linux.MNT_DETACH)
    _step("chdir", posix.chdir, "/")

"""A contained job's file system, built while ``rund-init`` is still the host's root.

Runs in ``rund-init`` (PID 1 of the job's PID namespace), in the host's user
namespace, before ``rund_trio.isolation.userns.enter`` moves it into the
job's user namespace. Everything mounted here is therefore made in a mount
namespace owned by a more privileged user namespace than the job's: when
``userns.enter`` copies it into the job's own, the kernel *locks* every mount
(``MNT_LOCKED``) and its read-only, nosuid, nodev and noexec flags. The job's
root, whatever capabilities it holds in its own user namespace, can then
neither unmount nor remount any of it, nor bind a parent directory without
the mounts on it (which would reveal what they cover).

What the job gets:

* ``/``: the host's root (or ``rootfs``) with every mount below it, read-only,
  nosuid and nodev (``mount_setattr``, recursive); the daemon's ``hidden``
  paths covered first, so the covers are part of it;
* ``/proc``: the job's PID namespace, with ``MASKED`` files covered by
  a read-only ``/dev/null``, ``MASKED`` directories by an empty read-only tmpfs, and
  ``READ_ONLY`` entries read-only (as Docker's default ``maskedPaths`` and
  ``readonlyPaths``);
* ``/sys``: a fresh read-only sysfs (of the job's network namespace) with
  ``/sys/fs/cgroup`` a fresh read-only cgroup2 whose root is the job's cgroup
  (a new cgroup namespace);
* ``/dev``: a read-only, nodev tmpfs holding only ``DEVICES`` (bind mounts of
  the host's nodes), a private devpts with ``ptmx`` (where ``rund-init``
  makes a ``-t`` job's terminal, ``/dev/pts/0``), a tmpfs ``shm`` and the
  ``fd``/``stdin``/``stdout``/``stderr`` links: no disk, and a node the job
  could make anywhere would not open (nodev everywhere);
* ``/tmp``: a private tmpfs, owned by the job's root (charged to the job's
  memory cgroup).

The host's own /proc, /sys, /dev and /tmp mounts stay in the copied tree,
under the job's (for /sys with a tmpfs between: the host's sysfs and cgroup2
are the same superblocks as the job's): unmounting them would cost an RCU
grace period per start,
and covered by locked mounts they are out of reach (no umount, no bind of
the tree above without them). The kernel also counts a procfs or sysfs with
a locked mount on its root as not fully visible, so a user namespace the job
makes cannot mount a fresh one on their strength.

A job started by the fork server gets the same tree from a template mount
namespace (``rund_trio.isolation.mount_template``): ``build_root`` and
``enter`` run once per template, ``mount_job_dirs`` per job.

Each step raises ``SetupError`` naming itself (``rund_trio.isolation.rootfs``).
"""

from __future__ import annotations

import posix

from rund_trio.isolation import linux, trace
from rund_trio.isolation.rootfs import SetupError, _mountpoint, _step

TYPE_CHECKING = False  # typing itself costs the helper an import
if TYPE_CHECKING:
    from collections.abc import Callable

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
"""Host device nodes bind-mounted into the job's /dev."""
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
MASKED = (
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/sysrq-trigger",
    "sys/firmware",
    "sys/devices/virtual/powercap",
)
"""Covered, relative to the job's root (Docker's ``maskedPaths``, plus
``sysrq-trigger``, which Docker only makes read-only)."""
READ_ONLY = ("proc/bus", "proc/fs", "proc/irq", "proc/sys")
"""Bound read-only on themselves (Docker's ``readonlyPaths``)."""

_NOSUID_NODEV_NOEXEC = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_RO_BIND = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY


def unshare_flags(namespaces: dict[str, bool]) -> int:
    """What ``rund-init`` unshares for a contained job: a mount and a cgroup
    namespace always, UTS/IPC/network as asked. All of them are owned by the
    host's user namespace, so the job's root has no power over them (it can
    neither set the host name nor reconfigure the network nor mount a procfs
    or a cgroup2); its user namespace comes later, from ``userns.enter``."""
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP
    for kind, flag in (
        ("uts", linux.CLONE_NEWUTS),
        ("ipc", linux.CLONE_NEWIPC),
        ("net", linux.CLONE_NEWNET),
    ):
        if namespaces[kind]:
            flags |= flag
    return flags


def build(
    rootfs: str | None,
    hidden: list[str],
    cover: Callable[[str], None],
    owner: tuple[int, int],
) -> None:
    """Build the job's file system in the cwd, which ``enter`` then makes
    the calling process's ``/``. Called right after
    ``unshare(unshare_flags(...))``, as the host's root. ``cover`` hides one
    absolute path (the daemon's covers); ``owner`` is the host (uid, gid) of
    the job's root, which owns /tmp."""
    build_root(rootfs, hidden, cover)
    mount_job_dirs(owner)


def build_root(rootfs: str | None, hidden: list[str], cover: Callable[[str], None]) -> None:
    """The part of ``build`` that is the same for every job with the same
    ``rootfs`` and ``hidden``: the read-only root tree with the covers, made
    the cwd (``rund_trio.isolation.mount_template`` keeps it, entered, as a
    template mount namespace)."""
    _step("mount-private", linux.mount, None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    for path in hidden:
        _step("hide", cover, path)
    source = "/" if rootfs is None else rootfs.rstrip("/")
    if rootfs is not None:
        for name in ("proc", "dev", "tmp"):
            _step("rootfs", _mountpoint, source + "/" + name)
    tree = _step_value("rootfs", linux.clone_mount, source)
    try:
        attributes = linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
        _step("read-only", linux.set_mount_attributes, tree, attributes)
        _step("rootfs", linux.attach_mount, tree, source)
        _step("chdir", posix.fchdir, tree)  # the new tree's root, above `source`
    finally:
        posix.close(tree)


def mount_job_dirs(owner: tuple[int, int]) -> None:
    """The part of ``build`` that is each job's own, in the root tree at the
    cwd: a /proc of its PID namespace, a /sys of its network and cgroup
    namespaces, its /dev and its /tmp (owned by ``owner``)."""
    trace.mark("init fs-root")
    _mount_proc()
    trace.mark("init fs-proc")
    _mount_sys()
    trace.mark("init fs-sys")
    _mount_dev(owner)
    trace.mark("init fs-dev")
    tmpfs_options = f"mode=1777,uid={owner[0]},gid={owner[1]}"
    _step(
        "mount-tmp",
        linux.mount,
        "tmpfs",
        "tmp",
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV,
        tmpfs_options,
    )


def enter() -> None:
    """Make the tree ``build`` left as the cwd the calling process's ``/``
    and drop the old root. Separate from ``build`` so that the host name and
    the loopback interface can be set up in between, with the host's root
    still reachable (nothing needs it, but errors read better)."""
    # pivot_root(".", "."): the old root ends up stacked on the new one, and
    # a lazy unmount of "." then drops it; no put_old directory needed.
    _step("pivot_root", linux.pivot_root, ".", ".")
    trace.mark("init pivoted")
    _step("umount-oldroot", linux.umount2, ".", linux.MNT_DETACH)
    trace.mark("init umounted")
    _step("chdir", posix.chdir, "/")


def _step_value(step: str, function: Callable[[str], int], arg: str) -> int:
    try:
        return function(arg)
    except OSError as error:
        raise SetupError(step, error) from None


def _kind(relative: str) -> int:
    """0 missing, 1 directory, 2 anything else."""
    try:
        mode = posix.stat(relative).st_mode
    except OSError:
        return 0
    return 1 if mode & 0o170000 == 0o040000 else 2


def _mask(relative: str) -> None:
    kind = _kind(relative)
    if kind == 1:
        flags = linux.MS_RDONLY | _NOSUID_NODEV_NOEXEC
        linux.mount("tmpfs", relative, "tmpfs", flags, "size=4k,nr_inodes=1,mode=000")
    elif kind == 2:  # /dev/null, read-only: reads as empty, writes fail
        linux.mount("/dev/null", relative, None, linux.MS_BIND)
        linux.mount(None, relative, None, _RO_BIND | linux.MS_NOSUID | linux.MS_NOEXEC)


def _read_only(relative: str) -> None:
    if _kind(relative):
        linux.mount(relative, relative, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, relative, None, _RO_BIND | _NOSUID_NODEV_NOEXEC)


def _mount_proc() -> None:
    _step("mount-proc", linux.mount, "proc", "proc", "proc", _NOSUID_NODEV_NOEXEC)
    for relative in READ_ONLY:
        _step("mount-proc", _read_only, relative)
    for relative in MASKED:
        if relative.startswith("proc/"):
            _step("mask", _mask, relative)


def _mount_sys() -> None:
    if _kind("sys") != 1:
        return
    flags = _NOSUID_NODEV_NOEXEC | linux.MS_RDONLY
    # The host's sysfs (and cgroup2) is there already: mounting the same
    # superblock on its own root is EBUSY, so a tmpfs goes in between.
    _step("mount-sys", linux.mount, "tmpfs", "sys", "tmpfs", flags, "size=4k,nr_inodes=1")
    _step("mount-sys", linux.mount, "sysfs", "sys", "sysfs", flags)
    if _kind("sys/fs/cgroup") == 1:
        _step("mount-cgroup", linux.mount, "cgroup2", "sys/fs/cgroup", "cgroup2", flags)
    for relative in MASKED:
        if relative.startswith("sys/"):
            _step("mask", _mask, relative)


def _mount_dev(owner: tuple[int, int]) -> None:
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    _step("mount-dev", linux.mount, "tmpfs", "dev", "tmpfs", flags, "mode=755,size=64k")
    for name in DEVICES:
        node = "dev/" + name
        _step("mount-dev", _mountpoint, node, False)
        _step("mount-dev", linux.mount, "/dev/" + name, node, None, linux.MS_BIND)
    for name, target in DEV_LINKS:
        _step("mount-dev", posix.symlink, target, "dev/" + name)
    _step("mount-dev", posix.mkdir, "dev/pts", 0o755)
    _step("mount-dev", posix.mkdir, "dev/shm", 0o755)
    _step(
        "mount-devpts",
        linux.mount,
        "devpts",
        "dev/pts",
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    shm_options = f"mode=1777,uid={owner[0]},gid={owner[1]}"
    _step("mount-dev", linux.mount, "tmpfs", "dev/shm", "tmpfs", flags, shm_options)
    _step("mount-dev", linux.mount, None, "dev", None, _RO_BIND | flags)

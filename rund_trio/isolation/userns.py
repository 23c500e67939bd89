"""A contained job's user namespace: the helper's side and ``rund-init``'s.

``rund-init`` builds the job's file system as the host's root
(``container_fs``), then calls ``enter``: ``unshare(CLONE_NEWUSER |
CLONE_NEWNS)`` puts it in a new user namespace and a copy of its mount
namespace owned by that user namespace, in which the kernel locks every mount
it copied. A process cannot write its own id maps with anything but its own
id, so ``enter`` then waits on a pipe while the helper above it (still the
host's root, outside every namespace but the cgroup) writes
``/proc/<init>/uid_map`` and ``gid_map`` (``write_maps``): the namespace's ids
0..count-1 are the host's ``uid_start``.., ``gid_start``... Finally
``rund-init`` becomes the namespace's root (``setresuid(0, 0, 0)``: host uid
``uid_start``), which it must: until then it is still the host's uid 0 for
every permission check on a file.

The handshake is two pipes: ``ready`` (``rund-init`` writes one byte once it
unshared; end of file without it means it failed and reported why itself) and
``go`` (the helper writes one byte once the maps are written; end of file
without it means the helper failed, and ``rund-init`` exits).

Only built-in modules are imported: this runs in the helper.
"""

from __future__ import annotations

import posix

from rund_trio.isolation import linux, trace
from rund_trio.isolation.rootfs import SetupError

USERNS_HELP = (
    "contained jobs need a user namespace and this host refuses to create one ({reason}); "
    "check that the kernel has CONFIG_USER_NS, that user.max_user_namespaces is above 0, "
    "and that no seccomp filter or LSM policy forbids it (a container's default seccomp "
    "profile does); otherwise run only host jobs"
)


def enter(ready_w: int, go_r: int) -> bool:
    """In ``rund-init``, after ``container_fs``: into the job's user namespace
    as its root. False when the helper gave up (the caller exits quietly);
    raises ``SetupError`` when this side fails. Closes both fds."""
    try:
        try:
            linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        except OSError as error:
            reason = error.strerror or str(error)
            raise SetupError(
                "userns", OSError(error.errno, USERNS_HELP.format(reason=reason))
            ) from None
        trace.mark("init userns-unshared")
        posix.write(ready_w, b"u")
        posix.close(ready_w)
        ready_w = -1
        if posix.read(go_r, 1) != b"g":
            return False
        trace.mark("init userns-go")
    finally:
        if ready_w >= 0:
            posix.close(ready_w)
        posix.close(go_r)
    try:
        posix.setresgid(0, 0, 0)
        posix.setgroups([])
        posix.setresuid(0, 0, 0)
        linux.set_not_dumpable()
    except OSError as error:
        raise SetupError("userns-root", error) from None
    return True


def write_maps(pid: int, ids: list[int], ready_r: int, go_w: int) -> None:
    """In the helper: wait for ``rund-init`` (``pid``) to be in its user
    namespace, then map ``ids`` = [uid_start, gid_start, count] and let it
    go on. Returns at once if ``rund-init`` failed before (it reported why).
    Closes both fds; raises ``SetupError`` (the caller reports it and kills
    ``rund-init``)."""
    try:
        if posix.read(ready_r, 1) != b"u":
            return
        uid_start, gid_start, count = ids
        for name, start in (("uid_map", uid_start), ("gid_map", gid_start)):
            path = f"/proc/{pid}/{name}"
            try:
                fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
                try:
                    posix.write(fd, b"0 %d %d\n" % (start, count))
                finally:
                    posix.close(fd)
            except OSError as error:
                raise SetupError("userns-map", OSError(error.errno, error.strerror, path)) from None
        posix.write(go_w, b"g")
    finally:
        posix.close(ready_r)
        posix.close(go_w)

"""Template mount namespaces: a contained job's read-only root, built once.

Every contained job on the host's root gets the same root tree: the host's
``/`` with every mount below it, read-only, nosuid and nodev, with the
daemon's ``hidden`` paths covered (``container_fs.build_root``). Building it
per job costs a clone of the host's mount tree and, worst, the unmount of the
old root after ``pivot_root``: every unmount waits for an RCU grace period,
milliseconds on a busy machine.

So the fork server builds it once per list of hidden paths, in a mount
namespace of its own: a short-lived child unshares one, builds the tree,
pivots into it and unmounts the old root, and the server keeps the namespace
(an fd of ``/proc/<child>/ns/mnt``) after the child exits. Each job's
``rund-init`` then ``setns``\\ es into the template and at once unshares a copy
of it (``container_fs.unshare_flags``, as before), in which it mounts its
own /proc, /sys, /dev and /tmp (``container_fs.mount_job_dirs``): the same
file system as a tree built per job, without the host's root in it, so with
nothing to unmount.

**A template never goes stale.** A job built from a template must see what a
job built at the same instant from the host would, so a template is dropped
(and the next job gets a new one) as soon as

- the host's mount table changes (``poll`` on the fork server's own
  ``/proc/self/mountinfo`` reports it): a template would otherwise show an
  old table, and pin file systems the host unmounted;
- the template's own mount table changes (its ``mountinfo``, kept open): a
  cover that was a mount point of a file or directory renamed over or
  deleted on the host is gone from every other namespace;
- a hidden path names something else than it did (``stat``: device and
  inode, or its absence): a cover hides what was there when it was made.

``Templates.sweep`` drops changed templates when the server is idle (no
host file system stays pinned), and ``Templates.get`` checks again right
before handing one out. Only a process in the host's user namespace may enter
a template (``setns`` needs ``CAP_SYS_ADMIN`` over its owner), and only the
fork server and its children hold one.
"""

from __future__ import annotations

import posix
import select

from rund_trio.isolation import container_fs, linux, wire
from rund_trio.isolation.rootfs import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection

_CHANGED = select.POLLPRI | select.POLLERR
_READY = b"t"

Identity = tuple[int, int] | None
"""(st_dev, st_ino) of what a path names, or None if nothing."""


def identity(path: str) -> Identity:
    """What ``path`` names now, following symbolic links as a cover does."""
    try:
        status = posix.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


STAGE = "tmp"
"""Where a template holds the host's device nodes, relative to its root."""


def _stage_devices() -> None:
    """In the template's tree (the cwd; the host's root still the root):
    a read-only tmpfs on ``STAGE`` with the host's ``container_fs.DEVICES``
    bound in ``STAGE/dev``. The tree itself is nodev, and a bind keeps its
    source's flags: a job's /dev binds its nodes from here (``enter_staged``),
    and its own /tmp then covers the stage."""
    flags = linux.MS_NOSUID | linux.MS_NOEXEC | linux.MS_NODEV
    linux.mount("tmpfs", STAGE, "tmpfs", flags, "mode=755,size=16k")
    posix.mkdir(STAGE + "/dev", 0o755)
    for name in container_fs.DEVICES:
        node = f"{STAGE}/dev/{name}"
        posix.close(posix.open(node, posix.O_CREAT | posix.O_WRONLY | posix.O_CLOEXEC, 0o644))
        linux.mount("/dev/" + name, node, None, linux.MS_BIND)
    linux.mount(None, STAGE, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | flags)


def _changed(fd: int) -> bool:
    """Whether the mount table ``fd`` (a ``mountinfo``) watches changed
    since the last call (or the open)."""
    poller = select.poll()
    poller.register(fd, _CHANGED)
    return any(events & _CHANGED for _, events in poller.poll(0))


class Template:
    """One template mount namespace (see the module's docstring)."""

    def __init__(
        self,
        hidden: tuple[str, ...],
        identities: tuple[Identity, ...],
        ns_fd: int,
        mountinfo_fd: int,
    ) -> None:
        self.hidden = hidden
        self._identities = identities
        """What each hidden path named just before the covers were made."""
        self.ns_fd = ns_fd
        """The namespace, for ``linux.setns``; close-on-exec."""
        self.mountinfo_fd = mountinfo_fd

    @classmethod
    def build(cls, hidden: tuple[str, ...], cover: Callable[[str], None]) -> Template:
        """Fork a child that builds the namespace, keep it, reap the child.
        Raises ``OSError`` or ``SetupError`` when it cannot be built."""
        identities = tuple(identity(path) for path in hidden)  # before the covers: see valid
        ready_r, ready_w = posix.pipe2(posix.O_CLOEXEC)
        done_r, done_w = posix.pipe2(posix.O_CLOEXEC)
        try:
            child = posix.fork()
            if child == 0:
                code = wire.EXIT_SETUP_FAILED
                try:
                    posix.close(ready_r)
                    posix.close(done_w)
                    linux.unshare(linux.CLONE_NEWNS)
                    container_fs.build_root(None, list(hidden), cover)
                    _stage_devices()
                    container_fs.enter()
                    posix.write(ready_w, _READY)
                    posix.read(done_r, 1)  # until the server has the namespace
                    code = 0
                finally:
                    posix._exit(code)
            posix.close(ready_w)
            ready_w = -1
            posix.close(done_r)
            done_r = -1
            try:
                if posix.read(ready_r, 1) != _READY:
                    raise OSError(5, "the template's builder failed")  # EIO
                ns_fd = posix.open(f"/proc/{child}/ns/mnt", posix.O_RDONLY | posix.O_CLOEXEC)
                try:
                    info = posix.open(f"/proc/{child}/mountinfo", posix.O_RDONLY | posix.O_CLOEXEC)
                except BaseException:
                    posix.close(ns_fd)
                    raise
            finally:
                posix.close(done_w)
                done_w = -1
                posix.waitpid(child, 0)
        finally:
            for fd in (ready_r, ready_w, done_r, done_w):
                if fd >= 0:
                    posix.close(fd)
        return cls(hidden, identities, ns_fd, info)

    def valid(self) -> bool:
        """Whether jobs may still be built from this template: its own mount
        table unchanged and every hidden path naming what it did."""
        if _changed(self.mountinfo_fd):
            return False
        return all(
            identity(path) == known
            for path, known in zip(self.hidden, self._identities, strict=True)
        )

    def close(self) -> None:
        posix.close(self.ns_fd)
        posix.close(self.mountinfo_fd)


class Templates:
    """The fork server's templates, by list of hidden paths."""

    def __init__(self, cover: Callable[[str], None], limit: int = 4) -> None:
        self._cover = cover
        self._limit = limit
        self._templates: dict[tuple[str, ...], Template] = {}
        self._host = posix.open("/proc/self/mountinfo", posix.O_RDONLY | posix.O_CLOEXEC)

    def watched_fds(self) -> list[int]:
        """The fds whose ``POLLPRI`` calls for a ``sweep``."""
        return [self._host, *(t.mountinfo_fd for t in self._templates.values())]

    def sweep(self, signalled: Collection[int] = ()) -> None:
        """Drop every template that is no longer valid (all of them when the
        host's mount table changed). ``signalled``: the ``watched_fds`` a
        ``poll`` of the caller reported (that poll consumed their news)."""
        host_changed = _changed(self._host) or self._host in signalled
        for key, template in list(self._templates.items()):
            if host_changed or template.mountinfo_fd in signalled or not template.valid():
                del self._templates[key]
                template.close()

    def get(self, hidden: tuple[str, ...]) -> Template | None:
        """A valid template for ``hidden``, built if need be; None if it
        cannot be built (the job then builds its tree itself, and reports
        what fails)."""
        self.sweep()
        template = self._templates.get(hidden)
        if template is not None:
            return template
        if len(self._templates) >= self._limit:
            oldest = next(iter(self._templates))
            self._templates.pop(oldest).close()
        try:
            template = Template.build(hidden, self._cover)
        except (OSError, SetupError):
            return None
        self._templates[hidden] = template
        return template

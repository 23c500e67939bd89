"""Template mount namespaces: a contained job's read-only root, built once.

Every contained job on the host's root gets the same root tree: the host's
``/`` with every mount below it, read-only, nosuid and nodev, with the
daemon's ``hidden`` paths covered (``container_fs.build_root``). Building it
per job costs a clone of the host's mount tree and, worst, the unmount of the
old root after ``pivot_root``: every unmount waits for an RCU grace period,
milliseconds on a busy machine.

So the fork server builds it once per list of hidden paths, in a mount
namespace of its own: a short-lived child (``rund-template``, forked once the
server answered the request that asked for it: no request waits for a build)
unshares one, builds the tree, pivots into it and unmounts the old root, and
the server keeps the namespace (an fd of ``/proc/<child>/ns/mnt``) after the
child exits. Until a template is ready, jobs build their own tree. Each job's
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


class _Build:
    """A template being built by a child of the fork server: it writes one
    byte on ``ready_r``'s pipe once the namespace is ready (end of file: it
    failed), then waits until ``done_w`` closes and exits."""

    def __init__(self, hidden: tuple[str, ...], cover: Callable[[str], None]) -> None:
        self.hidden = hidden
        self.identities = tuple(identity(path) for path in hidden)  # before the covers
        self.ready_r, ready_w = posix.pipe2(posix.O_CLOEXEC)
        done_r, self.done_w = posix.pipe2(posix.O_CLOEXEC)
        try:
            self.pid = posix.fork()
        except BaseException:
            for fd in (self.ready_r, ready_w, done_r, self.done_w):
                posix.close(fd)
            raise
        if self.pid == 0:
            _build(hidden, cover, ready_w, done_r)  # never returns
        posix.close(ready_w)
        posix.close(done_r)

    def finish(self) -> Template | None:
        """Once ``ready_r`` is readable: the template, or None if the child
        failed. The child then exits (reap ``pid``)."""
        try:
            if posix.read(self.ready_r, 1) != _READY:
                return None
            flags = posix.O_RDONLY | posix.O_CLOEXEC
            ns_fd = posix.open(f"/proc/{self.pid}/ns/mnt", flags)
            try:
                info = posix.open(f"/proc/{self.pid}/mountinfo", flags)
            except OSError:
                posix.close(ns_fd)
                return None
            return Template(self.hidden, self.identities, ns_fd, info)
        except OSError:
            return None
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Let the child go (it exits; reap ``pid``)."""
        for fd in (self.ready_r, self.done_w):
            try:  # noqa: SIM105 (contextlib costs an import)
                posix.close(fd)
            except OSError:
                pass
        self.ready_r = self.done_w = -1


def _build(
    hidden: tuple[str, ...], cover: Callable[[str], None], ready_w: int, done_r: int
) -> None:
    """In the builder child: never returns. Only the two pipe ends stay
    open (not the server's socket: the daemon must see the server's end of
    file when the server ends)."""
    code = wire.EXIT_SETUP_FAILED
    try:
        low = 3
        for fd in sorted((ready_w, done_r)):
            posix.closerange(low, fd)
            low = fd + 1
        posix.closerange(low, 0x7FFFFFFF)
        linux.set_process_name("rund-template")
        linux.unshare(linux.CLONE_NEWNS)
        container_fs.build_root(None, list(hidden), cover)
        _stage_devices()
        container_fs.enter()
        posix.write(ready_w, _READY)
        posix.read(done_r, 1)  # until the server has the namespace
        code = 0
    finally:
        posix._exit(code)


class Templates:
    """The fork server's templates, by list of hidden paths.

    ``get`` never builds one itself, so a request never waits for a build:
    it notes the wish, ``start_builds`` (called by the server once it has
    answered) forks the builders, and ``sweep`` (when their pipes are
    readable) collects what they built. Until then jobs build their own tree.
    """

    def __init__(self, cover: Callable[[str], None], limit: int = 4) -> None:
        self._cover = cover
        self._limit = limit
        self._templates: dict[tuple[str, ...], Template] = {}
        self._builds: dict[tuple[str, ...], _Build] = {}
        self._wanted: set[tuple[str, ...]] = set()
        self._failed: set[tuple[str, ...]] = set()
        """Lists whose build failed: not tried again until the host changes."""
        self._zombies: list[int] = []
        self._host = posix.open("/proc/self/mountinfo", posix.O_RDONLY | posix.O_CLOEXEC)

    def watched(self) -> list[tuple[int, int]]:
        """(fd, poll events) that call for a ``sweep`` when they fire."""
        pri = select.POLLPRI
        return [
            (self._host, pri),
            *((t.mountinfo_fd, pri) for t in self._templates.values()),
            *((b.ready_r, select.POLLIN) for b in self._builds.values()),
        ]

    def sweep(self, signalled: Collection[int] = ()) -> None:
        """Drop every template that is no longer valid (all of them, and the
        builds under way, when the host's mount table changed); collect the
        finished builds. ``signalled``: the ``watched`` fds a ``poll`` of the
        caller reported (that poll consumed their news)."""
        host_changed = _changed(self._host) or self._host in signalled
        if host_changed:
            self._failed.clear()
        for key, template in list(self._templates.items()):
            if host_changed or template.mountinfo_fd in signalled or not template.valid():
                del self._templates[key]
                template.close()
        for key, build in list(self._builds.items()):
            if host_changed:
                build.abandon()
            elif build.ready_r in signalled or _readable(build.ready_r):
                built = build.finish()
                if built is None or not built.valid():
                    self._failed.add(key)
                    if built is not None:
                        built.close()
                else:
                    self._templates[key] = built
            else:
                continue
            del self._builds[key]
            self._zombies.append(build.pid)
        self._reap()

    def get(self, hidden: tuple[str, ...]) -> Template | None:
        """A valid template for ``hidden``, or None (the job then builds its
        tree itself); a missing one is wished for (``start_builds``)."""
        self.sweep()
        template = self._templates.get(hidden)
        if template is None and hidden not in self._builds and hidden not in self._failed:
            self._wanted.add(hidden)
        return template

    def start_builds(self) -> None:
        """Fork a builder for each template wished for. Call it when no
        request's fds are open: the builders inherit what is."""
        wanted, self._wanted = self._wanted, set()
        for hidden in wanted:
            if len(self._templates) + len(self._builds) >= self._limit:
                if not self._templates:
                    return
                oldest = next(iter(self._templates))
                self._templates.pop(oldest).close()
            try:
                self._builds[hidden] = _Build(hidden, self._cover)
            except OSError:
                self._failed.add(hidden)

    def settle(self) -> None:
        """Block until every build under way is collected (tests; shutdown)."""
        while self._builds:
            poller = select.poll()
            for build in self._builds.values():
                poller.register(build.ready_r, select.POLLIN)
            self.sweep([fd for fd, _ in poller.poll()])

    def close(self) -> None:
        """Drop every template and build; reap every builder."""
        for template in self._templates.values():
            template.close()
        for build in self._builds.values():
            build.abandon()
            self._zombies.append(build.pid)
        self._templates.clear()
        self._builds.clear()
        for pid in self._zombies:
            try:  # noqa: SIM105 (contextlib costs an import)
                posix.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._zombies.clear()
        posix.close(self._host)

    def _reap(self) -> None:
        for pid in list(self._zombies):
            try:
                done, _ = posix.waitpid(pid, posix.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._zombies.remove(pid)


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))

"""The daemon's cgroup subtree and the per-job leaves in it.

Layout (default: below the daemon's own cgroup ``D``)::

    D/                      the daemon's cgroup at start-up
    D/daemon/               the daemon itself, moved here if controllers must be
                            enabled in D (cgroup v2's no-internal-processes rule)
    D/rund-trio/            the subtree (``--cgroup-root`` overrides it)
    D/rund-trio/<ULID>/     one leaf per job, limits applied before the job starts

``CgroupTree.setup`` creates the subtree and enables the controllers that are
both wanted (cpu, memory, io, pids) and available, top-down along the path from
the mount; whatever it cannot enable is remembered with the reason, and a job
asking for a limit that needs it gets ``Unsupported`` naming the controller.
Without a writable cgroup2 hierarchy the tree is *disabled*: jobs without
limits still run, just without a cgroup (``create_job`` returns None).

All file operations go through a ``CgroupFS`` so the unit tests run against a
temporary directory laid out like cgroupfs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from rund_trio.cgroups.devices import IoDevice, default_io_devices
from rund_trio.cgroups.discovery import CgroupLocation, parse_controllers, read_location
from rund_trio.cgroups.fs import CgroupFS
from rund_trio.cgroups.limits import (
    DEFAULT_PIDS_MAX,
    LimitConfig,
    Limits,
    check_controllers,
    limit_writes,
    validate_limits,
)
from rund_trio.cgroups.stats import CgroupStats, read_stats
from rund_trio.cgroups.watch import FileWatcher
from rund_trio.errors import ConfigError, FailedPrecondition, Unsupported
from rund_trio.locks import directory_held

__all__ = [
    "DAEMON_LEAF",
    "SUBTREE_NAME",
    "WANTED_CONTROLLERS",
    "CgroupOptions",
    "CgroupTree",
    "JobCgroup",
    "is_job_name",
]

SUBTREE_NAME = "rund-trio"
DAEMON_LEAF = "daemon"
WANTED_CONTROLLERS = ("cpu", "memory", "io", "pids")
"""Controllers enabled for job leaves where available, in this order."""

_JOB_NAME = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$", re.IGNORECASE)
_FALLBACK_KILL_INTERVAL = 0.01


def is_job_name(name: str) -> bool:
    """True for a ULID (26 Crockford base32 characters): the only names of job leaves."""
    return _JOB_NAME.match(name) is not None


@dataclass(frozen=True)
class CgroupOptions:
    """The daemon's cgroup settings (its flags)."""

    root: Path | None = None
    """``--cgroup-root``: the subtree's directory; default ``<own cgroup>/rund-trio``."""
    io_devices: tuple[IoDevice, ...] | None = None
    """``--io-device`` (repeatable); None: the machine's whole disks."""
    pids_max: int | None = DEFAULT_PIDS_MAX
    """pids.max of every job (where the pids controller is available); None: no cap."""
    cpus: int | None = None
    """CPUs a cpu limit may span; None: the CPUs the daemon may run on."""


def _errtext(exc: OSError) -> str:
    return exc.strerror or str(exc)


class CgroupTree:
    """The daemon's subtree: creates, limits, kills and removes job leaves.

    Build it with ``CgroupTree.discover`` (reads /proc) or ``CgroupTree.setup``
    (given a location, for tests). ``path`` is None when the tree is disabled.
    """

    def __init__(
        self,
        *,
        path: Path | None,
        controllers: frozenset[str],
        reasons: dict[str, str],
        config: LimitConfig,
        fs: CgroupFS,
        disabled_reason: str | None = None,
    ) -> None:
        self.path = path
        self.controllers = controllers
        """Controllers enabled for job leaves."""
        self.reasons = reasons
        """Why each wanted controller that is not enabled is missing."""
        self.config = config
        self.disabled_reason = disabled_reason
        self.fs = fs
        self.watcher = FileWatcher()

    # ----------------------------------------------------------------- set-up

    @classmethod
    def discover(cls, options: CgroupOptions | None = None) -> CgroupTree:
        """``setup`` at the cgroup2 mount and cgroup of this process (from /proc)."""
        return cls.setup(options or CgroupOptions(), location=read_location())

    @classmethod
    def setup(
        cls,
        options: CgroupOptions,
        *,
        location: CgroupLocation | None,
        fs: CgroupFS | None = None,
        pid: int | None = None,
        sys_block: Path = Path("/sys/block"),
    ) -> CgroupTree:
        """Create the subtree and enable controllers; never fails for a host's lack.

        A missing or read-only cgroup2 hierarchy gives a disabled tree; a
        controller that cannot be enabled is recorded in ``reasons``. Raises
        ``ConfigError`` only for a ``--cgroup-root`` outside the cgroup2 mount.
        ``pid`` is the daemon's pid (default: this process), moved into a
        ``daemon`` leaf if it sits where controllers must be enabled.
        """
        fs = fs or CgroupFS()
        pid = os.getpid() if pid is None else pid
        cpus = options.cpus or len(os.sched_getaffinity(0))
        devices = (
            options.io_devices if options.io_devices is not None else default_io_devices(sys_block)
        )
        config = LimitConfig(cpus=cpus, io_devices=devices, pids_max=options.pids_max)

        def disabled(reason: str) -> CgroupTree:
            return cls(
                path=None,
                controllers=frozenset(),
                reasons={c: reason for c in WANTED_CONTROLLERS},
                config=config,
                fs=fs,
                disabled_reason=reason,
            )

        if location is None:
            return disabled("no cgroup v2 hierarchy is mounted on this host")
        mount = location.mount.mount_point
        top_is_root = str(location.mount.root) == "/"
        if options.root is not None:
            subtree = Path(os.path.normpath(options.root))
            if subtree != mount and mount not in subtree.parents:
                raise ConfigError(
                    f"--cgroup-root {options.root} is not inside the cgroup2 mount {mount}"
                )
        else:
            own = location.path
            if own.name == DAEMON_LEAF and own != mount:
                own = own.parent  # restarted in place: our own earlier move
            subtree = own / SUBTREE_NAME

        chain = _prefixes(mount, subtree)
        for cg in chain[1:]:
            if not fs.exists(cg):
                try:
                    fs.mkdir(cg)
                except FileExistsError:
                    pass
                except OSError as exc:
                    return disabled(f"cannot create the cgroup {cg}: {_errtext(exc)}")

        reasons: dict[str, str] = {}
        for i, cg in enumerate(chain):
            try:
                available = parse_controllers(fs.read(cg / "cgroup.controllers"))
                enabled = parse_controllers(fs.read(cg / "cgroup.subtree_control"))
            except OSError as exc:
                return disabled(f"cannot read the cgroup {cg}: {_errtext(exc)}")
            missing = [c for c in WANTED_CONTROLLERS if c not in enabled and c not in reasons]
            for c in missing:
                if c not in available:
                    reasons[c] = (
                        f"{cg / 'cgroup.controllers'} does not list it: the kernel does not "
                        "offer it to cgroup v2 there (bound to a cgroup v1 hierarchy, or not "
                        "delegated)"
                    )
            to_enable = [c for c in missing if c in available]
            if not to_enable:
                continue
            if not (i == 0 and top_is_root):
                blocker = _make_room(fs, cg, pid)
                if blocker is not None:
                    for c in to_enable:
                        reasons[c] = blocker
                    continue
            for c in to_enable:
                try:
                    fs.write(cg / "cgroup.subtree_control", f"+{c}")
                except OSError as exc:
                    reasons[c] = (
                        f"enabling it in {cg / 'cgroup.subtree_control'} failed: {_errtext(exc)}"
                    )

        try:
            final = parse_controllers(fs.read(subtree / "cgroup.subtree_control"))
        except OSError as exc:
            return disabled(f"cannot read the cgroup {subtree}: {_errtext(exc)}")
        controllers = frozenset(c for c in WANTED_CONTROLLERS if c in final)
        reasons = {c: r for c, r in reasons.items() if c not in controllers}
        return cls(path=subtree, controllers=controllers, reasons=reasons, config=config, fs=fs)

    @property
    def enabled(self) -> bool:
        """True when jobs get a cgroup (possibly without any controller)."""
        return self.path is not None

    def describe(self) -> str:
        """One line for the daemon's start-up log."""
        if self.path is None:
            return f"cgroups disabled: {self.disabled_reason}"
        parts = [f"cgroups at {self.path}"]
        parts.append("controllers " + (" ".join(sorted(self.controllers)) or "none"))
        parts.extend(f"no {c}: {r}" for c, r in sorted(self.reasons.items()))
        return "; ".join(parts)

    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold the subtree for this daemon alone while the block runs.

        Two daemons sharing a subtree would kill each other's jobs as stale
        (and remove each other's leaves at shutdown), so the subtree directory
        is flock()ed; a second daemon gets ``ConfigError``. The lock dies with
        the daemon, so a crashed one never blocks its successor. On exit the
        subtree directory is removed if it is empty by then.
        """
        if self.path is None:
            yield
            return
        refusal = (
            f"another rund-trio daemon uses the cgroup subtree {self.path}: "
            "give each daemon its own --cgroup-root"
        )
        with directory_held(self.path, refusal):
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    self.fs.rmdir(self.path)

    # ------------------------------------------------------------- the leaves

    def check_limits(self, limits: Limits) -> None:
        """Raise ``InvalidRequest`` or ``Unsupported`` if ``limits`` cannot be honoured here."""
        validate_limits(limits, self.config)
        check_controllers(
            limits,
            self.controllers,
            self.path if self.path is not None else "this host's cgroups",
            self.reasons,
        )

    def job(self, name: str) -> JobCgroup:
        """The leaf of job ``name`` (whether or not it exists). Needs an enabled tree."""
        if self.path is None:
            raise RuntimeError("the cgroup tree is disabled")
        if not is_job_name(name):
            raise ValueError(f"not a job id (ULID): {name!r}")
        return JobCgroup(self, self.path / name)

    def create_job(self, name: str, limits: Limits) -> JobCgroup | None:
        """Create job ``name``'s leaf with ``limits`` applied, ready to be joined.

        Returns None when the tree is disabled and ``limits`` is empty (the job
        runs without a cgroup). Raises ``InvalidRequest``/``Unsupported`` as
        ``check_limits`` does, and ``FailedPrecondition`` when the leaf cannot
        be made (it already exists, or the kernel refuses a limit); no leaf is
        left behind then. Synchronous: a few cgroupfs writes.
        """
        self.check_limits(limits)
        if self.path is None:
            return None
        job = self.job(name)
        try:
            self.fs.mkdir(job.path)
        except FileExistsError:
            raise FailedPrecondition(f"the cgroup {job.path} already exists") from None
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot create the cgroup {job.path}: {_errtext(exc)}"
            ) from exc
        files = self.fs.files(job.path)
        for filename, text in limit_writes(limits, self.config, files):
            try:
                self.fs.write(job.path / filename, text)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.fs.rmdir(job.path)
                raise Unsupported(
                    f"the kernel refused {filename} {text!r} for the job's cgroup: {_errtext(exc)}"
                ) from exc
        return job

    def job_names(self) -> list[str]:
        """Names of the job leaves that exist now."""
        if self.path is None:
            return []
        return [n for n in self.fs.subdirs(self.path) if is_job_name(n)]

    async def remove_all(self) -> list[str]:
        """Kill every job leaf's processes and remove the leaves; their names.

        For start-up (leaves a crashed daemon left: call before starting jobs)
        and shutdown. Kills all leaves first, then waits for each.
        Cancellation: leaves not yet removed stay (killed); calling again
        finishes the work.
        """
        names = self.job_names()
        jobs = [self.job(n) for n in names]
        for job in jobs:
            job.kill()
        for job in jobs:
            await job.remove()
        return names

    cleanup_stale = remove_all

    def close(self) -> None:
        """Release the inotify fd. Leaves are untouched."""
        self.watcher.close()


def _prefixes(mount: Path, subtree: Path) -> list[Path]:
    rel = subtree.relative_to(mount)
    out = [mount]
    for part in rel.parts:
        out.append(out[-1] / part)
    return out


def _read_pids(fs: CgroupFS, cg: Path) -> list[int]:
    try:
        return [int(x) for x in fs.read(cg / "cgroup.procs").split()]
    except (OSError, ValueError):
        return []


def _make_room(fs: CgroupFS, cg: Path, pid: int) -> str | None:
    """Empty ``cg`` of processes before controllers are enabled in it.

    Moves ``pid`` (the daemon) into ``cg/daemon`` if it is the only process
    there. Returns None on success, else why controllers cannot be enabled.
    """
    pids = _read_pids(fs, cg)
    if not pids:
        return None
    others = [p for p in pids if p != pid]
    if others:
        shown = " ".join(str(p) for p in others[:5]) + (" ..." if len(others) > 5 else "")
        return (
            f"{cg} holds other processes (PIDs {shown}), and cgroup v2 enables controllers "
            "only for cgroups without processes of their own; run the daemon in a cgroup of "
            "its own or pass --cgroup-root"
        )
    leaf = cg / DAEMON_LEAF
    try:
        if not fs.exists(leaf):
            fs.mkdir(leaf)
        fs.write(leaf / "cgroup.procs", str(pid))
    except OSError as exc:
        return f"moving the daemon out of {cg} into {leaf} failed: {_errtext(exc)}"
    return None


class JobCgroup:
    """One job's leaf cgroup."""

    def __init__(self, tree: CgroupTree, path: Path) -> None:
        self._tree = tree
        self._fs = tree.fs
        self.path = path

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"JobCgroup({str(self.path)!r})"

    def exists(self) -> bool:
        return self._fs.exists(self.path)

    def pids(self) -> list[int]:
        """PIDs in the leaf itself (not in sub-cgroups); [] once it is gone."""
        return _read_pids(self._fs, self.path)

    def _all_pids(self) -> list[int]:
        out: list[int] = []
        stack = [self.path]
        while stack:
            cg = stack.pop()
            out.extend(_read_pids(self._fs, cg))
            stack.extend(cg / n for n in self._fs.subdirs(cg))
        return out

    def populated(self) -> bool:
        """True while any process lives in the leaf or below it; False once gone."""
        try:
            events = self._fs.read(self.path / "cgroup.events")
        except OSError:
            return False
        return any(line.split() == ["populated", "1"] for line in events.splitlines())

    def stats(self) -> CgroupStats:
        """Resource use so far (cpu.stat, memory.*, pids.current, io.stat). Cheap."""
        return read_stats(self.path, self._fs)

    def read_file(self, name: str) -> str | None:
        """A control file's text, or None if it is not there."""
        try:
            return self._fs.read(self.path / name)
        except OSError:
            return None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every process in the leaf and below. Never blocks.

        SIGKILL uses ``cgroup.kill`` (atomic: forks in flight die too) where
        the kernel has it. Processes that vanish meanwhile are ignored.
        """
        if signum == signal.SIGKILL:
            self.kill()
            return
        for p in self._all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signum)

    def kill(self) -> bool:
        """SIGKILL everything in the leaf and below, once. Never blocks.

        Returns True if done through ``cgroup.kill`` (complete: nothing can
        escape), False if by signalling each listed pid (a process forked
        after the listing survives: ``kill_and_wait`` repeats until empty).
        """
        if self._fs.exists(self.path / "cgroup.kill"):
            try:
                self._fs.write(self.path / "cgroup.kill", "1")
                return True
            except FileNotFoundError:
                return True  # gone meanwhile: nothing left to kill
            except OSError as exc:
                if exc.errno == errno.ENODEV:  # removed between the check and the write
                    return True
        for p in self._all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return False

    async def wait_empty(self) -> None:
        """Return once no process is left in the leaf (``populated 0``), or it is gone.

        Woken by inotify on cgroup.events, no polling. Cancellation: safe,
        nothing changes.
        """
        await self._tree.watcher.wait_for(self.path / "cgroup.events", lambda: not self.populated())

    async def kill_and_wait(self) -> None:
        """SIGKILL the whole leaf and wait until it is empty.

        Without ``cgroup.kill`` (kernels before 5.14) the listed pids are
        killed again after each short pause until none is left. Cancellation:
        the processes may still be dying; calling again finishes.
        """
        while not self.kill():
            if not self._all_pids():
                break
            await trio.sleep(_FALLBACK_KILL_INTERVAL)
        await self.wait_empty()

    async def remove(self) -> None:
        """Kill what is left, wait until empty, and remove the leaf (sub-cgroups first).

        Idempotent: returns at once if the leaf is gone. Cancellation: the leaf
        may remain (killed, perhaps not yet empty); calling again finishes.
        Raises ``FailedPrecondition`` if the kernel still refuses the removal.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.exists():
            return
        await self.kill_and_wait()
        try:
            self._rmdir_tree(self.path)
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot remove the cgroup {self.path}: {_errtext(exc)}"
            ) from exc

    def _rmdir_tree(self, cg: Path) -> None:
        for child in self._fs.subdirs(cg):
            self._rmdir_tree(cg / child)
        with contextlib.suppress(FileNotFoundError):
            self._fs.rmdir(cg)

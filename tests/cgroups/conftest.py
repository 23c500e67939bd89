"""A temporary directory that behaves like cgroupfs, for the cgroup unit tests.

``FakeCgroupFS`` subclasses the real ``CgroupFS`` and emulates the kernel's
side effects: mkdir fills a cgroup with interface files for the controllers
its parent enables, ``cgroup.subtree_control`` enforces availability and the
no-internal-processes rule, ``cgroup.procs`` moves pids and updates
``populated`` in ``cgroup.events`` (a real file write, so inotify fires),
``cgroup.kill`` empties a subtree, rmdir refuses populated cgroups. Every write
is logged in order. The pids are fake (above the kernel's PID_MAX_LIMIT), so a
stray ``os.kill`` on one can never hit a real process.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from rund_trio.cgroups.fs import CgroupFS

FAKE_PID = 2**22 + 1000
"""A pid no real process can have (PID_MAX_LIMIT is 2**22)."""

ALL_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")

_CONTROLLER_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n"},
    "memory": {
        "memory.max": "max\n",
        "memory.current": "0\n",
        "memory.peak": "0\n",
        "memory.oom.group": "0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    },
    "io": {"io.max": "", "io.stat": ""},
    "pids": {"pids.max": "max\n", "pids.current": "0\n", "pids.events": "max 0\n"},
}


def _order(controllers: Iterable[str]) -> list[str]:
    s = set(controllers)
    return [c for c in ALL_CONTROLLERS if c in s]


class FakeCgroupFS(CgroupFS):
    """cgroupfs semantics on a temporary directory."""

    def __init__(
        self,
        root: Path,
        controllers: Iterable[str] = ALL_CONTROLLERS,
        *,
        has_kill: bool = True,
        has_swap: bool = True,
    ) -> None:
        self.root = root
        self.has_kill = has_kill
        self.has_swap = has_swap
        self.log: list[tuple[str, str]] = []
        self.killed: list[str] = []
        self.fail: dict[tuple[str, str], int] = {}
        """(relative path, op or text) -> errno to raise instead of doing it."""
        self.current_pid = FAKE_PID
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text(" ".join(_order(controllers)) + "\n")
        (root / "cgroup.subtree_control").write_text("\n")
        (root / "cgroup.procs").write_text("")
        (root / "cpu.stat").write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")

    # -- helpers for tests -------------------------------------------------

    def rel(self, path: Path) -> str:
        r = str(path.relative_to(self.root))
        return "/" if r == "." else "/" + r

    def make(self, rel: str, *, subtree: Iterable[str] = (), procs: Iterable[int] = ()) -> Path:
        """Create the cgroup ``rel`` (and parents) with ``subtree`` enabled and ``procs``."""
        path = self.root / rel.strip("/")
        for p in [*reversed(path.relative_to(self.root).parents), path.relative_to(self.root)]:
            if str(p) != "." and not (self.root / p).exists():
                self._mkdir(self.root / p)
        if subtree:
            self._set_subtree(path, _order(subtree))
        for pid in procs:
            self._move(path, pid)
        return path

    def procs(self, path: Path) -> list[int]:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]

    def controllers_of(self, path: Path, name: str = "cgroup.subtree_control") -> list[str]:
        return (path / name).read_text().split()

    def writes_to(self, path: Path) -> list[tuple[str, str]]:
        prefix = self.rel(path)
        return [(f[len(prefix) :].lstrip("/"), t) for f, t in self.log if f.startswith(prefix)]

    # -- CgroupFS ----------------------------------------------------------

    def _check_fail(self, path: Path, what: str) -> None:
        err = self.fail.get((self.rel(path), what))
        if err is not None:
            raise OSError(err, os.strerror(err), str(path))

    def write(self, path: Path, text: str) -> None:
        self._check_fail(path, text)
        self.log.append((self.rel(path), text))
        cg, name = path.parent, path.name
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        if name == "cgroup.subtree_control":
            available = set(self.controllers_of(cg, "cgroup.controllers"))
            enabled = set(self.controllers_of(cg))
            for tok in text.split():
                c = tok[1:]
                if c not in available:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
                if tok[0] == "+":
                    if cg != self.root and self.procs(cg):
                        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
                    enabled.add(c)
                else:
                    enabled.discard(c)
            self._set_subtree(cg, _order(enabled))
        elif name == "cgroup.procs":
            pid = int(text.strip())
            self._move(cg, self.current_pid if pid == 0 else pid)
        elif name == "cgroup.kill":
            self.killed.append(self.rel(cg))
            for sub, _dirs, _files in os.walk(cg):
                (Path(sub) / "cgroup.procs").write_text("")
            self._update_populated()
        elif name == "io.max":
            old = path.read_text()
            path.write_text(old + text + "\n")
        else:
            path.write_text(text + "\n")

    def mkdir(self, path: Path) -> None:
        self._check_fail(path, "mkdir")
        self.log.append((self.rel(path), "mkdir"))
        self._mkdir(path)

    def rmdir(self, path: Path) -> None:
        self._check_fail(path, "rmdir")
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        if any(p.is_dir() for p in path.iterdir()) or self._populated(path):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        self.log.append((self.rel(path), "rmdir"))
        shutil.rmtree(path)

    # -- the kernel's side ---------------------------------------------------

    def _mkdir(self, path: Path) -> None:
        os.mkdir(path)
        parent_sub = self.controllers_of(path.parent)
        files = {
            "cgroup.controllers": " ".join(parent_sub) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        if self.has_kill:
            files["cgroup.kill"] = ""
        for name, text in files.items():
            (path / name).write_text(text)
        self._add_controller_files(path, parent_sub)

    def _add_controller_files(self, path: Path, controllers: Iterable[str]) -> None:
        for c in controllers:
            for name, text in _CONTROLLER_FILES.get(c, {}).items():
                if not (path / name).exists():
                    (path / name).write_text(text)
            if c == "memory" and self.has_swap and not (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("max\n")
            if c == "cpu":
                (path / "cpu.stat").write_text(
                    "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"
                    "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
                )

    def _set_subtree(self, cg: Path, controllers: list[str]) -> None:
        (cg / "cgroup.subtree_control").write_text(" ".join(controllers) + "\n")
        for child in cg.iterdir():
            if child.is_dir():
                (child / "cgroup.controllers").write_text(" ".join(controllers) + "\n")
                self._add_controller_files(child, controllers)

    def _move(self, target: Path, pid: int) -> None:
        if target != self.root and self.controllers_of(target):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(target))
        for sub, _dirs, _files in os.walk(self.root):
            procs_file = Path(sub) / "cgroup.procs"
            pids = [int(x) for x in procs_file.read_text().split()]
            if pid in pids:
                pids.remove(pid)
                procs_file.write_text("".join(f"{p}\n" for p in pids))
        with open(target / "cgroup.procs", "a") as f:
            f.write(f"{pid}\n")
        self._update_populated()

    def _populated(self, cg: Path) -> bool:
        return any((Path(sub) / "cgroup.procs").read_text().strip() for sub, _d, _f in os.walk(cg))

    def _update_populated(self) -> None:
        for sub, _dirs, _files in os.walk(self.root):
            events = Path(sub) / "cgroup.events"
            if events.exists():
                want = f"populated {int(self._populated(Path(sub)))}\nfrozen 0\n"
                if events.read_text() != want:
                    events.write_text(want)


@pytest.fixture
def make_fs(tmp_path: Path) -> Callable[..., FakeCgroupFS]:
    """``make_fs(controllers=..., has_kill=..., has_swap=...)``: a fresh fake cgroupfs."""

    def make(
        controllers: Iterable[str] = ALL_CONTROLLERS,
        *,
        has_kill: bool = True,
        has_swap: bool = True,
    ) -> FakeCgroupFS:
        return FakeCgroupFS(
            tmp_path / "cgroupfs", controllers, has_kill=has_kill, has_swap=has_swap
        )

    return make

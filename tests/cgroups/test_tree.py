"""The daemon's subtree and job leaves, against a fake cgroupfs in a temp dir."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import trio
import trio.testing

from rund_trio.cgroups.devices import IoDevice
from rund_trio.cgroups.discovery import Cgroup2Mount, CgroupLocation
from rund_trio.cgroups.limits import Limits
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError, FailedPrecondition, InvalidRequest, Unsupported

JOB = "01HZX3K8Q9V7N2M4P6R8T0W2Y4"
JOB2 = "01HZX3K8Q9V7N2M4P6R8T0W2Y5"
DEVICES = (IoDevice(254, 0),)
OPTIONS = CgroupOptions(io_devices=DEVICES, cpus=2, pids_max=100)
FULL = ("cpu", "io", "memory", "pids")

MakeFs = Callable[..., Any]


def location(fs: Any, cgroup: str) -> CgroupLocation:
    mount = Cgroup2Mount(mount_point=fs.root, root=PurePosixPath("/"))
    rel = cgroup.strip("/")
    return CgroupLocation(mount, PurePosixPath(cgroup), fs.root / rel if rel else fs.root)


def systemd_like(make_fs: MakeFs, **kw: Any) -> Any:
    """A pure v2 host: controllers delegated down to rund.service, the daemon inside."""
    fs = make_fs(**kw)
    fs.make("/", subtree=FULL)
    fs.make("/system.slice", subtree=FULL)
    fs.make("/system.slice/rund.service", procs=[fs.current_pid])
    return fs


def setup(fs: Any, cgroup: str, options: CgroupOptions = OPTIONS) -> CgroupTree:
    return CgroupTree.setup(options, location=location(fs, cgroup), fs=fs, pid=fs.current_pid)


# ------------------------------------------------------------------ set-up


def test_setup_moves_daemon_then_enables_top_down(make_fs: MakeFs) -> None:
    fs = systemd_like(make_fs)
    tree = setup(fs, "/system.slice/rund.service")
    service = fs.root / "system.slice/rund.service"
    assert tree.path == service / "rund-trio"
    assert tree.controllers == set(FULL)
    assert tree.reasons == {}
    assert fs.procs(service) == []
    assert fs.procs(service / "daemon") == [fs.current_pid]
    assert fs.controllers_of(service) == ["cpu", "io", "memory", "pids"]
    assert fs.controllers_of(tree.path) == ["cpu", "io", "memory", "pids"]
    log = [(f, t) for f, t in fs.log]
    move = log.index(("/system.slice/rund.service/daemon/cgroup.procs", str(fs.current_pid)))
    first_enable = log.index(("/system.slice/rund.service/cgroup.subtree_control", "+cpu"))
    subtree_enable = log.index(
        ("/system.slice/rund.service/rund-trio/cgroup.subtree_control", "+cpu")
    )
    assert move < first_enable < subtree_enable
    # Nothing is written above the daemon's cgroup: those already had everything.
    assert not [f for f, _ in log if f.startswith("/system.slice/cgroup.")]
    assert "controllers cpu io memory pids" in tree.describe()


def test_setup_twice_is_idempotent(make_fs: MakeFs) -> None:
    fs = systemd_like(make_fs)
    setup(fs, "/system.slice/rund.service")
    again = setup(fs, "/system.slice/rund.service/daemon")  # restarted in place
    assert again.path == fs.root / "system.slice/rund.service/rund-trio"
    assert again.controllers == set(FULL)


def test_setup_started_in_its_leaf_by_systemd_needs_no_move(make_fs: MakeFs) -> None:
    """systemd >= 254 with DelegateSubgroup=daemon starts the daemon in
    <unit>/daemon: the subtree is <unit>/rund-trio all the same."""
    fs = make_fs()
    fs.make("/", subtree=FULL)
    fs.make("/system.slice", subtree=FULL)
    fs.make("/system.slice/rund.service")
    fs.make("/system.slice/rund.service/daemon", procs=[fs.current_pid])
    tree = setup(fs, "/system.slice/rund.service/daemon")
    service = fs.root / "system.slice/rund.service"
    assert tree.path == service / "rund-trio"
    assert tree.controllers == set(FULL)
    assert fs.procs(service / "daemon") == [fs.current_pid]
    assert not [f for f, _ in fs.log if f.endswith("cgroup.procs")], "nothing was moved"
    assert not [f for f, _ in fs.log if f.startswith("/system.slice/cgroup.")]


def test_setup_enables_from_the_root_without_moving_root_processes(make_fs: MakeFs) -> None:
    """A VM or container whose daemon runs in the root cgroup (exempt from the rule)."""
    fs = make_fs()
    fs.make("/", procs=[1, fs.current_pid])
    tree = setup(fs, "/")
    assert tree.path == fs.root / "rund-trio"
    assert tree.controllers == set(FULL)
    assert fs.procs(fs.root) == [1, fs.current_pid]
    assert not (fs.root / "daemon").exists()


def test_hybrid_host_gets_plain_leaves(make_fs: MakeFs) -> None:
    fs = make_fs(controllers=["hugetlb"])
    fs.make("/", procs=[1])
    tree = setup(fs, "/")
    assert tree.enabled and tree.controllers == frozenset()
    assert "cgroup.controllers does not list it" in tree.reasons["memory"]
    with pytest.raises(Unsupported) as info:
        tree.check_limits(Limits(memory_bytes=64 << 20))
    assert f"the 'memory' controller is not available in {tree.path}" in str(info.value)
    with pytest.raises(Unsupported, match="'cpu' controller"):
        tree.create_job(JOB, Limits(cpu_quota_us=50000))
    assert not (fs.root / "rund-trio" / JOB).exists()
    job = tree.create_job(JOB, Limits())
    assert job is not None and job.path.is_dir()
    assert fs.writes_to(job.path) == [("", "mkdir")]  # no pids controller: no pids.max
    assert fs.controllers_of(fs.root) == []  # hugetlb is not wanted: nothing enabled


def test_other_processes_block_enabling(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.make("/", subtree=FULL)
    fs.make("/user.slice/session-1.scope", procs=[fs.current_pid, fs.current_pid + 1])
    fs.make("/user.slice", subtree=FULL)
    tree = setup(fs, "/user.slice/session-1.scope")
    assert tree.controllers == frozenset()
    assert "holds other processes" in tree.reasons["cpu"]
    assert "--cgroup-root" in tree.reasons["cpu"]
    assert fs.procs(fs.root / "user.slice/session-1.scope") == [
        fs.current_pid,
        fs.current_pid + 1,
    ]
    with pytest.raises(Unsupported, match="holds other processes"):
        tree.check_limits(Limits(cpu_quota_us=10000))


def test_cgroup_root_override(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.make("/", procs=[1])
    fs.make("/user.slice/session-1.scope", procs=[fs.current_pid, 77])
    opts = CgroupOptions(root=fs.root / "rund" / "jobs", io_devices=DEVICES, cpus=2)
    tree = setup(fs, "/user.slice/session-1.scope", opts)
    assert tree.path == fs.root / "rund/jobs"
    assert tree.controllers == set(FULL)
    assert fs.procs(fs.root / "user.slice/session-1.scope") == [fs.current_pid, 77]


def test_cgroup_root_outside_the_mount(make_fs: MakeFs, tmp_path: Path) -> None:
    fs = make_fs()
    with pytest.raises(ConfigError, match="not inside the cgroup2 mount"):
        setup(fs, "/", CgroupOptions(root=tmp_path / "elsewhere"))


def test_enable_failure_is_recorded(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.fail[("/cgroup.subtree_control", "+io")] = errno.EOPNOTSUPP
    tree = setup(fs, "/")
    assert tree.controllers == {"cpu", "memory", "pids"}
    assert "failed: Operation not supported" in tree.reasons["io"]
    with pytest.raises(Unsupported, match="the 'io' controller is not available"):
        tree.check_limits(Limits(io_rbps=1 << 20))


def test_no_cgroup2_disables(make_fs: MakeFs) -> None:
    fs = make_fs()
    tree = CgroupTree.setup(OPTIONS, location=None, fs=fs)
    assert not tree.enabled
    assert tree.create_job(JOB, Limits()) is None
    with pytest.raises(Unsupported, match=r"'memory' controller .*no cgroup v2 hierarchy"):
        tree.create_job(JOB, Limits(memory_bytes=1 << 20))
    assert tree.job_names() == []
    assert "disabled" in tree.describe()


def test_read_only_cgroupfs_disables(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.fail[("/rund-trio", "mkdir")] = errno.EROFS
    tree = setup(fs, "/")
    assert not tree.enabled
    assert "Read-only file system" in (tree.disabled_reason or "")


# ------------------------------------------------------------------ leaves


def test_create_job_applies_limits(make_fs: MakeFs) -> None:
    fs = make_fs()
    tree = setup(fs, "/")
    limits = Limits(cpu_quota_us=20000, memory_bytes=32 << 20, io_rbps=1 << 20, io_wiops=10)
    job = tree.create_job(JOB, limits)
    assert job is not None and job.name == JOB
    assert fs.writes_to(job.path) == [
        ("", "mkdir"),
        ("pids.max", "100"),
        ("cpu.max", "20000 100000"),
        ("memory.max", "33554432"),
        ("memory.swap.max", "0"),
        ("memory.oom.group", "1"),
        ("io.max", "254:0 rbps=1048576 wiops=10"),
    ]
    assert (job.path / "cpu.max").read_text() == "20000 100000\n"
    assert tree.job_names() == [JOB]


def test_create_job_without_swap_accounting(make_fs: MakeFs) -> None:
    fs = make_fs(has_swap=False)
    tree = setup(fs, "/")
    job = tree.create_job(JOB, Limits(memory_bytes=1 << 20))
    assert job is not None
    assert ("memory.swap.max", "0") not in fs.writes_to(job.path)


def test_create_job_validation_comes_first(make_fs: MakeFs) -> None:
    fs = make_fs(controllers=["hugetlb"])
    tree = setup(fs, "/")
    with pytest.raises(InvalidRequest, match="between 1000 and 200000"):
        tree.create_job(JOB, Limits(cpu_quota_us=10))


def test_create_job_twice(make_fs: MakeFs) -> None:
    tree = setup(make_fs(), "/")
    tree.create_job(JOB, Limits())
    with pytest.raises(FailedPrecondition, match="already exists"):
        tree.create_job(JOB, Limits())


def test_refused_limit_removes_the_leaf(make_fs: MakeFs) -> None:
    fs = make_fs()
    tree = setup(fs, "/")
    fs.fail[(f"/rund-trio/{JOB}/io.max", "254:0 rbps=5")] = errno.EINVAL
    with pytest.raises(Unsupported, match=r"refused io\.max '254:0 rbps=5'.*Invalid argument"):
        tree.create_job(JOB, Limits(io_rbps=5))
    assert not (fs.root / "rund-trio" / JOB).exists()


def test_job_names_must_be_ulids(make_fs: MakeFs) -> None:
    tree = setup(make_fs(), "/")
    for bad in ("daemon", "../escape", JOB + "X", "01HZX3K8Q9V7N2M4P6R8T0W2YU"):
        with pytest.raises(ValueError):
            tree.job(bad)


def test_stats_of_a_leaf(make_fs: MakeFs) -> None:
    tree = setup(make_fs(), "/")
    job = tree.create_job(JOB, Limits())
    assert job is not None
    (job.path / "cpu.stat").write_text("usage_usec 30\nuser_usec 20\nsystem_usec 10\n")
    (job.path / "memory.current").write_text("4096\n")
    s = job.stats()
    assert (s.cpu_user_usec, s.memory_current, s.memory_oom_kills) == (20, 4096, 0)


# ------------------------------------------------------- kill, wait, remove


async def test_remove_kills_waits_and_removes(make_fs: MakeFs) -> None:
    fs = make_fs()
    tree = setup(fs, "/")
    job = tree.create_job(JOB, Limits())
    assert job is not None
    fs.make(f"/rund-trio/{JOB}/inner", procs=[fs.current_pid + 5])
    fs.make(f"/rund-trio/{JOB}", procs=[fs.current_pid + 6])
    assert job.populated()
    with trio.fail_after(5):
        await job.remove()
    assert fs.killed == [f"/rund-trio/{JOB}"]
    assert not job.path.exists()
    await job.remove()  # idempotent
    assert not job.populated() and job.pids() == []
    tree.close()


async def test_wait_empty_wakes_on_populated_0(make_fs: MakeFs) -> None:
    """Written like the kernel does it: cgroup.events changes, inotify wakes the waiter."""
    fs = make_fs()
    tree = setup(fs, "/")
    job = tree.create_job(JOB, Limits())
    assert job is not None
    (job.path / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    done = trio.Event()

    async def waiter() -> None:
        await job.wait_empty()
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            (job.path / "cgroup.events").write_text("populated 1\nfrozen 1\n")  # not it
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            (job.path / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert done.is_set()
    assert tree.watcher.uses_inotify
    tree.close()


async def test_remove_all_cleans_stale_leaves_only(make_fs: MakeFs) -> None:
    fs = make_fs()
    first = setup(fs, "/")
    for name in (JOB, JOB2):
        first.create_job(name, Limits())
        fs.make(f"/rund-trio/{name}", procs=[fs.current_pid + hash(name) % 1000])
    fs.make("/rund-trio/not-a-job")
    # The daemon "crashed"; a new one starts on the same tree.
    second = setup(fs, "/")
    assert second.job_names() == [JOB, JOB2]
    with trio.fail_after(5):
        removed = await second.cleanup_stale()
    assert removed == [JOB, JOB2]
    assert sorted(p.name for p in (fs.root / "rund-trio").iterdir() if p.is_dir()) == ["not-a-job"]
    assert set(fs.killed) == {f"/rund-trio/{JOB}", f"/rund-trio/{JOB2}"}


async def test_fallback_kill_without_cgroup_kill(make_fs: MakeFs) -> None:
    """Old kernels: SIGKILL each listed pid until the cgroup is empty (real processes)."""
    fs = make_fs(has_kill=False)
    tree = setup(fs, "/")
    job = tree.create_job(JOB, Limits())
    assert job is not None
    procs = [await trio.lowlevel.open_process(["sleep", "60"]) for _ in range(2)]
    for p in procs:
        fs.make(f"/rund-trio/{JOB}", procs=[p.pid])

    async def reaper(p: trio.Process) -> None:
        await p.wait()  # the "kernel" takes a dead process out of its cgroup
        pids = [x for x in fs.procs(job.path) if x != p.pid]
        (job.path / "cgroup.procs").write_text("".join(f"{x}\n" for x in pids))
        fs._update_populated()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for p in procs:
                nursery.start_soon(reaper, p)
            await job.remove()
    assert [p.returncode for p in procs] == [-signal.SIGKILL, -signal.SIGKILL]
    assert not job.path.exists()


async def test_signal_reaches_every_process(make_fs: MakeFs) -> None:
    fs = make_fs()
    tree = setup(fs, "/")
    job = tree.create_job(JOB, Limits())
    assert job is not None
    p = await trio.lowlevel.open_process(["sleep", "60"])
    fs.make(f"/rund-trio/{JOB}/sub", procs=[p.pid])
    job.signal(signal.SIGTERM)
    with trio.fail_after(5):
        assert await p.wait() == -signal.SIGTERM
    job.signal(signal.SIGKILL)  # SIGKILL goes through cgroup.kill
    assert fs.killed == [f"/rund-trio/{JOB}"]


def test_join_helper_module(tmp_path: Path) -> None:
    """``python -m rund_trio.cgroups.join LEAF PROGRAM ...`` joins, then execs."""
    leaf = tmp_path / "leaf"
    leaf.mkdir()
    (leaf / "cgroup.procs").write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "rund_trio.cgroups.join", str(leaf), "echo", "hi"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "hi\n"
    assert (leaf / "cgroup.procs").read_text() == "0"
    gone = subprocess.run(
        [sys.executable, "-m", "rund_trio.cgroups.join", str(tmp_path / "gone"), "true"],
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 127
    assert "cannot join cgroup" in gone.stderr and "No such file" in gone.stderr
    noexec = subprocess.run(
        [sys.executable, "-m", "rund_trio.cgroups.join", str(leaf), "/nonexistent/prog"],
        capture_output=True,
        text=True,
    )
    assert noexec.returncode == 127 and "cannot execute" in noexec.stderr


def test_join_does_not_import_trio() -> None:
    code = "import sys, rund_trio.cgroups.join; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

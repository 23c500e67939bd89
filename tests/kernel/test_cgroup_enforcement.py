"""The cgroup layer against a real cgroup v2 kernel: the kernel enforces the limits.

Run inside the VM by ``scripts/test-kernel.sh``; skipped elsewhere. Processes
join their leaf before exec, the way the daemon's spawner will do it: through
``python -m rund_trio.cgroups.join`` or ``join_cgroup`` in a ``preexec_fn``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from rund_trio.cgroups.devices import IoDevice
from rund_trio.cgroups.join import join_cgroup
from rund_trio.cgroups.limits import Limits
from rund_trio.cgroups.stats import parse_flat_keyed
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree, JobCgroup

pytestmark = pytest.mark.kernel

JOB = "01HZX3K8Q9V7N2M4P6R8T0W2Y4"
JOB2 = "01HZX3K8Q9V7N2M4P6R8T0W2Y5"
JOB3 = "01HZX3K8Q9V7N2M4P6R8T0W2Y6"
SLOW = 120  # seconds: a generous bound for anything under emulation (no KVM)


async def start_via_helper(
    job: JobCgroup, *argv: str, stdout: int | None = None, stderr: int | None = None
) -> trio.Process:
    """Start ``argv`` through the join helper: in the cgroup before exec."""
    helper = [sys.executable, "-m", "rund_trio.cgroups.join", str(job.path), *argv]
    return await trio.lowlevel.open_process(helper, stdout=stdout, stderr=stderr)


async def start_joined(
    job: JobCgroup, *argv: str, stdout: int | None = None, stderr: int | None = None
) -> trio.Process:
    """Start ``argv`` with ``join_cgroup`` between fork and exec."""
    path = job.path
    return await trio.lowlevel.open_process(
        list(argv), preexec_fn=lambda: join_cgroup(path), stdout=stdout, stderr=stderr
    )


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, count: int = 1) -> bytes:
    data = b""
    while data.count(marker) < count:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"EOF before {count} x {marker!r}: {data!r}")
        data += chunk
    return data


async def test_memory_limit_oom_kills(tree: CgroupTree) -> None:
    job = tree.create_job(JOB, Limits(memory_bytes=32 << 20))
    assert job is not None
    assert job.read_file("memory.max") == f"{32 << 20}\n"
    assert job.read_file("memory.oom.group") == "1\n"
    with trio.fail_after(SLOW):
        proc = await start_via_helper(job, sys.executable, "-c", "x = b'x' * (256 << 20)")
        assert await proc.wait() == -signal.SIGKILL
        await job.wait_empty()
    stats = job.stats()
    events = parse_flat_keyed(job.read_file("memory.events") or "")
    print(f"memory.events after the OOM kill: {events}")
    # With memory.oom.group=1 the kernel kills the victim once as the victim and
    # once more as a member of its group, and counts both (6.1): one process,
    # oom_kill 2. oom_group_kill counts the group kills: exactly one.
    assert stats.memory_oom_kills is not None and stats.memory_oom_kills >= 1
    assert events["oom_kill"] >= 1
    if "oom_group_kill" in events:
        assert events["oom_group_kill"] == 1
    assert stats.memory_peak is not None and stats.memory_peak <= 32 << 20


async def test_cpu_limit_throttles(tree: CgroupTree) -> None:
    job = tree.create_job(JOB, Limits(cpu_quota_us=20000))
    assert job is not None
    assert job.read_file("cpu.max") == "20000 100000\n"
    busy = "print('go', flush=True)\nwhile True:\n    pass\n"
    with trio.fail_after(SLOW):
        proc = await start_joined(job, sys.executable, "-c", busy, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        await read_until(proc.stdout, b"go")
        before, t0 = job.stats(), time.monotonic()
        await trio.sleep(2.5)  # the measurement window itself, not a wait for an event
        after, t1 = job.stats(), time.monotonic()
        await job.kill_and_wait()
        assert await proc.wait() == -signal.SIGKILL
    share = (after.cpu_usage_usec - before.cpu_usage_usec) / 1e6 / (t1 - t0)
    print(f"cpu share under cpu.max 20000 100000: {share:.3f}")
    assert share <= 0.25
    assert after.cpu_nr_throttled is not None and after.cpu_nr_throttled > 0
    assert after.cpu_throttled_usec is not None and after.cpu_throttled_usec > 0


async def _timed_dd(job: JobCgroup, disk: Path) -> float:
    dd = ["dd", f"if={disk}", "of=/dev/null", "bs=64K", "count=64", "iflag=direct"]
    t0 = time.monotonic()
    proc = await start_joined(job, *dd, stderr=subprocess.DEVNULL)
    assert await proc.wait() == 0
    return time.monotonic() - t0


async def test_io_read_limit(tree: CgroupTree, disk: tuple[Path, IoDevice]) -> None:
    path, device = disk
    free = tree.create_job(JOB2, Limits())
    limited = tree.create_job(JOB, Limits(io_rbps=1 << 20))
    assert free is not None and limited is not None
    assert f"{device} rbps=1048576" in (limited.read_file("io.max") or "")
    with trio.fail_after(SLOW):
        unlimited_s = await _timed_dd(free, path)
        limited_s = await _timed_dd(limited, path)
    print(f"4 MiB direct read: {unlimited_s:.2f}s unlimited, {limited_s:.2f}s at rbps=1MiB/s")
    assert limited_s >= 3.0
    assert unlimited_s < limited_s / 2
    assert (limited.stats().io_read_bytes or 0) >= 4 << 20


async def test_pids_max_stops_a_fork_bomb(tree: CgroupTree) -> None:
    job = tree.create_job(JOB, Limits())
    assert job is not None
    pids_max = tree.config.pids_max
    assert pids_max is not None and job.read_file("pids.max") == f"{pids_max}\n"
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
    )
    with trio.fail_after(SLOW):
        proc = await start_joined(job, sys.executable, "-c", bomb)
        await job.wait_until("pids.events", lambda t: parse_flat_keyed(t or "").get("max", 0) > 0)
        current = job.stats().pids_current
        assert current is not None and current <= pids_max
        await job.kill_and_wait()
        assert await proc.wait() == -signal.SIGKILL
    assert job.pids() == []


async def test_kill_empties_a_tree_of_children_and_leaf_is_removed(tree: CgroupTree) -> None:
    job = tree.create_job(JOB, Limits())
    assert job is not None
    script = "for i in 1 2 3; do (sleep 1000 & sleep 1000 & echo up; wait) & done; echo up; wait"
    with trio.fail_after(SLOW):
        proc = await start_via_helper(job, "sh", "-c", script, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        await read_until(proc.stdout, b"up", 4)
        assert len(job.pids()) >= 10  # sh, 3 subshells, 6 sleeps
        assert job.populated()
        await job.kill_and_wait()
        assert job.pids() == [] and not job.populated()
        assert await proc.wait() == -signal.SIGKILL
        await job.remove()
    assert not job.path.exists()


async def test_stale_leaves_are_killed_and_removed(tree: CgroupTree, subtree_root: Path) -> None:
    a = tree.create_job(JOB, Limits(memory_bytes=64 << 20))
    b = tree.create_job(JOB2, Limits())
    assert a is not None and b is not None
    nested = b.path / "nested"
    os.mkdir(nested)
    procs = [
        await start_joined(a, "sleep", "1000"),
        await start_joined(b, "sleep", "1000"),
        await trio.lowlevel.open_process(["sleep", "1000"], preexec_fn=lambda: join_cgroup(nested)),
    ]
    assert a.populated() and b.populated()
    # The daemon that made them "crashed"; a new one starts on the same subtree.
    again = CgroupTree.discover(CgroupOptions(root=subtree_root, io_devices=()))
    try:
        with trio.fail_after(SLOW):
            removed = await again.cleanup_stale()
            assert sorted(removed) == [JOB, JOB2]
            assert [await p.wait() for p in procs] == [-signal.SIGKILL] * 3
    finally:
        again.close()
    assert not a.path.exists() and not b.path.exists()
    assert again.job_names() == []


DAEMON_SCRIPT = """
import json, sys
from pathlib import Path
from rund_trio.cgroups.devices import IoDevice
from rund_trio.cgroups.join import join_cgroup
from rund_trio.cgroups.limits import Limits
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
join_cgroup(Path(sys.argv[1]))          # start "as a service" in a cgroup of its own
tree = CgroupTree.discover(CgroupOptions(io_devices=()))
job = tree.create_job(sys.argv[2], Limits(cpu_quota_us=50000, memory_bytes=64 << 20))
print(json.dumps({
    "path": str(tree.path),
    "controllers": sorted(tree.controllers),
    "own": open("/proc/self/cgroup").read().strip(),
    "cpu_max": (job.path / "cpu.max").read_text().strip(),
}))
"""


async def test_daemon_moves_itself_out_of_its_cgroup(subtree_root: Path) -> None:
    """The no-internal-processes rule: a daemon alone in its cgroup moves into .../daemon."""
    os.mkdir(subtree_root)
    with trio.fail_after(SLOW):
        done = await trio.run_process(
            [sys.executable, "-c", DAEMON_SCRIPT, str(subtree_root), JOB3],
            capture_stdout=True,
        )
    out = json.loads(done.stdout)
    assert out["own"] == f"0::/{subtree_root.name}/daemon"
    assert out["path"] == str(subtree_root / "rund-trio")
    assert out["controllers"] == ["cpu", "io", "memory", "pids"]
    assert out["cpu_max"] == "50000 100000"
    assert (subtree_root / "cgroup.subtree_control").read_text().split() == [
        "cpu",
        "io",
        "memory",
        "pids",
    ]

"""The tree on this machine's real cgroup2 hierarchy, where one is writable.

On a hybrid host (cgroup2 without controllers) this still exercises the real
kernel: leaf creation, joining before exec, cgroup.kill, the inotify wake-up on
cgroup.events and rmdir. Skipped where cgroup2 is missing or read-only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from rund_trio.cgroups.join import join_cgroup
from rund_trio.cgroups.limits import Limits
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree

JOB = "01HZX3K8Q9V7N2M4P6R8T0W2Y4"


async def test_real_leaf_join_kill_remove(host_cgroup: Path) -> None:
    tree = CgroupTree.discover(CgroupOptions(root=host_cgroup, io_devices=()))
    assert tree.path == host_cgroup
    job = tree.create_job(JOB, Limits())
    assert job is not None
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import os, time; os.fork(); time.sleep(60)"],
            preexec_fn=lambda: join_cgroup(job.path),
        )
        for _ in range(2)
    ]
    try:
        assert job.populated()
        assert set(p.pid for p in procs) <= set(job.pids())
        with trio.fail_after(20):
            await job.remove()
        assert not job.path.exists()
        assert [p.wait() for p in procs] == [-9, -9]
        assert job.stats().cpu_usage_usec == 0  # gone: defaults
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        tree.close()

"""The daemon on this host's cgroup v2 hierarchy: each job in a leaf of its
own, removed when the job ends; one daemon per subtree. (Limits themselves are
proven in the kernel tier, tests/kernel: this host's cgroup2 has no controllers.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.cgroups.tree import CgroupOptions
from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki, private_cgroup_root, start_daemon

pytestmark = pytest.mark.skipif(
    private_cgroup_root() is None, reason="no cgroup2 hierarchy on this machine"
)


async def test_a_job_runs_in_a_cgroup_of_its_own_removed_when_it_ends(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    root = private_cgroup_root()
    daemon = await start_daemon(nursery, pki, tmp_path, cgroups=CgroupOptions(root=root))
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["1000"]))
        assert root is not None
        leaf = root / job_id
        procs = (leaf / "cgroup.procs").read_text().split()
        assert str((await rund.status(job_id)).pid) in procs
        await rund.stop(job_id)
    assert not leaf.exists()


async def test_stop_kills_a_descendant_that_left_the_process_group(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    root = private_cgroup_root()
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        cgroups=CgroupOptions(root=root),
        isolation=IsolationPolicy(namespaces=False, default_profile=Profile.HOST),
    )
    async with daemon.client() as rund:
        job_id = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", "setsid sleep 1000 & echo $!; wait"])
        )
        async for chunk in rund.log(job_id):
            escaped = int(chunk.stdout)
            break
        assert Path(f"/proc/{escaped}").exists()
        await rund.stop(job_id)
    state = Path(f"/proc/{escaped}/stat")
    assert not state.exists() or state.read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"


async def test_a_second_daemon_on_the_same_cgroup_subtree_is_refused(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    root = private_cgroup_root()
    await start_daemon(nursery, pki, tmp_path / "a", cgroups=CgroupOptions(root=root))
    with pytest.raises(ConfigError, match="another rund-trio daemon uses the cgroup subtree"):
        await start_daemon(nursery, pki, tmp_path / "b", cgroups=CgroupOptions(root=root))


async def test_a_limit_the_host_cannot_enforce_names_the_missing_controller(
    daemon: Daemon,
) -> None:
    async with daemon.client() as rund:
        request = pb.JobStartRequest(name="true")
        request.max_cpu_bandwidth.value = 50000
        with pytest.raises(Exception, match="'cpu' controller is not available"):
            await rund.start(request)


async def test_memory_is_reported_even_where_the_cgroup_has_no_memory_controller(
    daemon: Daemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["1000"]))
        status = await rund.status(job_id)
        await rund.stop(job_id)
    assert status.memory_current > 0

"""Job profiles, proven from inside jobs started through a real daemon over
mTLS: a contained job's capabilities, no_new_privs and seccomp filter as the
kernel reports them in /proc/self/status, and who may ask for a host job."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import RpcError
from rund_trio.isolation import seccomp
from rund_trio.isolation.capabilities import DOCKER_DEFAULT, NET_BIND_SERVICE, NET_RAW, names
from rund_trio.jobs.isolation_policy import IsolationPolicy, Network, Profile
from tests.conftest import Daemon, Pki, start_daemon
from tests.integration.test_isolation import run

DOCKER_MASK = sum(1 << cap for cap in DOCKER_DEFAULT)
CAP_SETS = ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb")


def proc_status(text: str) -> dict[str, str]:
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in fields}


def own_status() -> dict[str, str]:
    return proc_status(Path("/proc/self/status").read_text())


async def job_status_file(daemon: Daemon, **fields: object) -> tuple[pb.JobStatus, dict[str, str]]:
    """The job's Status and its own /proc/self/status (read by ``cat``, the
    job's program itself)."""
    status, out, err = await run(daemon, "cat", "/proc/self/status", **fields)
    assert status.exit_code.value == 0, err
    return status, proc_status(out)


@pytest.fixture
async def granting_daemon(nursery: trio.Nursery, pki: Pki, tmp_path: Path) -> Daemon:
    """A daemon that lets alice (by her email SAN) run host jobs, and nobody else."""
    policy = IsolationPolicy(
        host_job_grants=("email:alice@*",),
        allowed_uids=frozenset({65534}),
        allowed_gids=frozenset({65534}),
    )
    return await start_daemon(nursery, pki, tmp_path, isolation=policy)


async def test_a_contained_jobs_capability_sets_are_within_dockers_default(
    daemon: Daemon,
) -> None:
    _, proc = await job_status_file(daemon)
    for name in CAP_SETS:
        mask = int(proc[name], 16)
        assert mask & ~DOCKER_MASK == 0, f"{name} holds {names(mask & ~DOCKER_MASK)}"
    assert int(proc["CapAmb"], 16) == 0


async def test_a_contained_job_keeps_no_raw_sockets_and_no_ports_of_the_hosts_network(
    daemon: Daemon,
) -> None:
    _, proc = await job_status_file(daemon)
    bounding = int(proc["CapBnd"], 16)
    assert not bounding & (1 << NET_RAW | 1 << NET_BIND_SERVICE)


async def test_a_contained_job_with_a_network_of_its_own_may_bind_low_ports(
    daemon: Daemon,
) -> None:
    _, proc = await job_status_file(daemon, network=pb.JOB_NETWORK_ISOLATED)
    assert int(proc["CapEff"], 16) & (1 << NET_BIND_SERVICE)


async def test_a_contained_job_has_no_new_privs_and_a_seccomp_filter(daemon: Daemon) -> None:
    _, proc = await job_status_file(daemon)
    assert proc["NoNewPrivs"] == "1"
    assert proc["Seccomp"] == "2"  # SECCOMP_MODE_FILTER


async def test_a_contained_job_run_as_another_user_has_no_capabilities_left(
    granting_daemon: Daemon,
) -> None:
    _, proc = await job_status_file(granting_daemon, uid=65534)
    assert (proc["CapPrm"], proc["CapEff"], proc["CapAmb"]) == ("0" * 16,) * 3
    assert int(proc["CapBnd"], 16) & ~DOCKER_MASK == 0


async def test_status_says_a_job_ran_contained(daemon: Daemon) -> None:
    status, _ = await job_status_file(daemon)
    assert status.profile == pb.JOB_PROFILE_CONTAINED


async def test_a_request_without_a_profile_gets_the_daemons_default(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    """As the Go ``runc`` client's requests, which have no profile field."""
    host_default = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(default_profile=Profile.HOST)
    )
    status, proc = await job_status_file(host_default)
    assert status.profile == pb.JOB_PROFILE_HOST
    assert proc["NoNewPrivs"] == "0"


async def test_a_granted_client_gets_a_host_job_with_the_daemons_powers(
    granting_daemon: Daemon,
) -> None:
    status, proc = await job_status_file(granting_daemon, profile=pb.JOB_PROFILE_HOST)
    mine = own_status()
    assert status.profile == pb.JOB_PROFILE_HOST
    assert [proc[name] for name in CAP_SETS] == [mine[name] for name in CAP_SETS]
    assert (proc["NoNewPrivs"], proc["Seccomp"]) == (mine["NoNewPrivs"], mine["Seccomp"])


async def test_a_host_job_without_a_grant_is_permission_denied(granting_daemon: Daemon) -> None:
    async with granting_daemon.client("bob") as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true", profile=pb.JOB_PROFILE_HOST))
    assert error.value.code == "PERMISSION_DENIED"
    assert "host jobs" in error.value.message and "--allow-host-jobs" in error.value.message


async def test_an_unknown_profile_is_an_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true", profile=7))  # type: ignore[arg-type]
    assert error.value.code == "INVALID_ARGUMENT"
    assert "unknown profile 7" in error.value.message


@pytest.mark.parametrize(
    "policy",
    [
        IsolationPolicy(),
        IsolationPolicy(network=Network.ISOLATED),
    ],
    ids=["namespaces", "isolated-network"],
)
async def test_every_isolation_mode_confines_a_contained_job(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, policy: IsolationPolicy
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, isolation=policy)
    _, proc = await job_status_file(daemon)
    assert int(proc["CapBnd"], 16) & ~DOCKER_MASK == 0
    assert (proc["NoNewPrivs"], proc["Seccomp"]) == ("1", "2")


async def test_a_contained_job_in_a_root_filesystem_is_confined(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, busybox_rootfs: Path
) -> None:
    (busybox_rootfs / "proc").mkdir(exist_ok=True)
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(rootfs=str(busybox_rootfs))
    )
    _, proc = await job_status_file(daemon)
    assert int(proc["CapBnd"], 16) & ~DOCKER_MASK == 0
    assert (proc["NoNewPrivs"], proc["Seccomp"]) == ("1", "2")


async def test_a_host_that_cannot_build_the_filter_refuses_contained_jobs_not_weakens_them(
    granting_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(allow_tracing: bool) -> bytes:
        raise seccomp.FilterUnavailable("libseccomp is not usable (test)")

    monkeypatch.setattr(seccomp, "_programs", {})
    monkeypatch.setattr(seccomp, "_build", unavailable)
    with pytest.raises(RpcError) as error:
        await run(granting_daemon, "true")
    assert error.value.code == "FAILED_PRECONDITION"
    assert "cannot confine contained jobs with seccomp" in error.value.message
    status, _, _ = await run(granting_daemon, "true", profile=pb.JOB_PROFILE_HOST)
    assert status.exit_code.value == 0

"""Jobs are containerized: proven from inside jobs started through the
daemon over mTLS, as a client would start them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import RpcError
from rund_trio.jobs.isolation_policy import IsolationPolicy, Network, Profile
from tests.conftest import Daemon, Pki, start_daemon
from tests.procs import live_pids


async def run(daemon: Daemon, *argv: str, **fields: object) -> tuple[pb.JobStatus, str, str]:
    request = pb.JobStartRequest(name=argv[0], args=argv[1:])
    for name, value in fields.items():
        field = getattr(request, name)
        if hasattr(field, "value"):
            field.value = value
        else:
            setattr(request, name, value)
    async with daemon.client() as rund:
        job_id = await rund.start(request)
        out, err = bytearray(), bytearray()
        async for chunk in rund.log(job_id):
            out += chunk.stdout
            err += chunk.stderr
        return await rund.status(job_id), out.decode(), err.decode()


async def test_a_job_sees_only_its_own_processes(daemon: Daemon) -> None:
    _, out, _ = await run(daemon, "ps", "-e", "-o", "pid=,comm=")
    processes = [line.split() for line in out.splitlines()]
    assert processes == [["1", "rund-init"], ["2", "ps"]]


async def test_a_job_has_a_hostname_of_its_own(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="hostname"))
        out = b"".join([chunk.stdout async for chunk in rund.log(job_id)])
    assert out.decode().strip() == f"rund-{job_id[:12].lower()}"
    assert out.decode().strip() != os.uname().nodename


async def test_a_mount_made_by_a_host_job_is_not_visible_on_the_host(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(default_profile=Profile.HOST)
    )
    marker = f"rund-test-{secrets.token_hex(4)}"
    status, out, _ = await run(
        daemon, "sh", "-c", f"mount -t tmpfs {marker} /mnt && grep -c {marker} /proc/self/mountinfo"
    )
    assert status.exit_code.value == 0 and out.strip() == "1"
    assert marker not in Path("/proc/self/mountinfo").read_text()


async def test_a_job_may_ask_for_a_network_with_only_loopback(daemon: Daemon) -> None:
    _, out, _ = await run(
        daemon,
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate",
        network=pb.JOB_NETWORK_ISOLATED,
    )
    assert out.split() == ["lo", "unknown"]  # loopback reports "unknown" when up


async def test_by_default_a_job_shares_the_host_network(daemon: Daemon) -> None:
    _, out, _ = await run(daemon, "ls", "/sys/class/net")
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


async def test_exit_codes_and_signals_pass_through_unchanged(daemon: Daemon) -> None:
    exited, _, _ = await run(daemon, "sh", "-c", "exit 3")
    killed, _, _ = await run(daemon, "sh", "-c", "kill -TERM $$")
    assert (exited.exit_code.value, exited.killed) == (3, False)
    assert (killed.killed, killed.signal.value, killed.HasField("exit_code")) == (True, 15, False)


async def test_orphaned_grandchildren_die_when_the_job_ends(daemon: Daemon) -> None:
    marker = str(secrets.randbelow(10**9) + 10**9)
    status, _, _ = await run(daemon, "sh", "-c", f"sleep {marker} & exit 0")
    assert status.exit_code.value == 0
    assert not live_pids(cmdline=f"sleep\0{marker}\0".encode())


@pytest.fixture
async def strict_daemon(nursery: trio.Nursery, pki: Pki, tmp_path: Path) -> Daemon:
    """A daemon that forbids the host network and lets jobs run as nobody only."""
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        isolation=IsolationPolicy(
            network=Network.ISOLATED,
            allow_host_network=False,
            allowed_uids=frozenset({65534}),
            allowed_gids=frozenset({65534}),
        ),
    )


async def test_the_host_network_is_refused_when_the_daemon_forbids_it(
    strict_daemon: Daemon,
) -> None:
    with pytest.raises(RpcError) as error:
        await run(strict_daemon, "true", network=pb.JOB_NETWORK_HOST)
    assert error.value.code == "FAILED_PRECONDITION"
    assert "host network" in error.value.message


async def test_a_job_runs_as_an_allowed_user(strict_daemon: Daemon) -> None:
    _, out, _ = await run(strict_daemon, "id", "-u", uid=65534)
    assert out.strip() == "65534"


async def test_root_is_refused_when_the_daemon_does_not_allow_it(strict_daemon: Daemon) -> None:
    with pytest.raises(RpcError) as error:
        await run(strict_daemon, "id", uid=0)
    assert error.value.code == "PERMISSION_DENIED"
    assert "uid 0" in error.value.message


async def test_with_a_root_filesystem_slash_is_that_directory(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, busybox_rootfs: Path
) -> None:
    daemon = await start_daemon(
        nursery, pki, tmp_path, isolation=IsolationPolicy(rootfs=str(busybox_rootfs))
    )
    status, out, _ = await run(
        daemon, "sh", "-c", "cat /etc/marker; test -e /etc/hostname || echo no-host-files"
    )
    assert status.exit_code.value == 0
    assert out.splitlines() == ["inside the rootfs", "no-host-files"]


async def test_status_and_stop_behave_as_without_isolation(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["1000"]))
        running = await rund.status(job_id)
        stopped = await rund.stop(job_id)
    assert running.state == pb.JOB_STATE_RUNNING
    assert (stopped.stopped, stopped.killed, stopped.signal_name) == (True, True, "SIGKILL")

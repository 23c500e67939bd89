"""Honest endings: in every isolation mode, with and without cgroups, a job
that exits reports its exit code, and a job killed by a signal (sent by
itself or from the host, SIGKILL included) reports ``killed``, that signal and
no exit code; Status's ``pid`` is the job's program on the host. Through a
real daemon over mTLS, as a client sees it."""

from __future__ import annotations

import os
import signal
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.jobs.isolation_policy import IsolationPolicy, Network, Profile
from tests.conftest import Daemon, Pki, private_cgroup_root, start_daemon

EXIT_CODES = (0, 1, 3, 255)
SIGNALS = (signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGHUP)
MODES = ("namespaces", "isolated-network", "rootfs", "no-namespaces-host")
CGROUPS = ("cgroups", "no-cgroups")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=CGROUPS)
def cgroups(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def mode_daemon(
    nursery: trio.Nursery,
    pki: Pki,
    tmp_path: Path,
    busybox_rootfs: Path,
    mode: str,
    cgroups: str,
) -> Daemon:
    (busybox_rootfs / "bin" / "sleep").symlink_to("busybox")
    (busybox_rootfs / "proc").mkdir()
    policy = {
        "namespaces": IsolationPolicy(),
        "isolated-network": IsolationPolicy(network=Network.ISOLATED),
        "rootfs": IsolationPolicy(rootfs=str(busybox_rootfs)),
        # nothing to set up before the exec: plain posix_spawn without cgroups
        "no-namespaces-host": IsolationPolicy(namespaces=False, default_profile=Profile.HOST),
    }[mode]
    overrides: dict[str, object] = {"isolation": policy}
    if cgroups == "no-cgroups":
        overrides["cgroups"] = None
    else:
        from rund_trio.cgroups.tree import CgroupOptions

        overrides["cgroups"] = CgroupOptions(root=private_cgroup_root())
    return await start_daemon(nursery, pki, tmp_path, **overrides)


async def run_to_end(rund: RundClient, *argv: str) -> pb.JobStatus:
    job_id = await rund.start(pb.JobStartRequest(name=argv[0], args=argv[1:]))
    return await wait_for_end(rund, job_id)


async def wait_for_end(rund: RundClient, job_id: str) -> pb.JobStatus:
    async with aclosing(rund.log(job_id)) as chunks:
        async for _ in chunks:
            pass
    return await rund.status(job_id)


async def in_parallel(*calls: object) -> list[pb.JobStatus]:
    results: list[pb.JobStatus] = [pb.JobStatus()] * len(calls)

    async def one(index: int, call: object) -> None:
        results[index] = await call  # type: ignore[misc]

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return results


def assert_exited(status: pb.JobStatus, code: int) -> None:
    assert (pb.JobState.Name(status.state), status.killed) == ("JOB_STATE_EXITED", False)
    assert status.HasField("exit_code") and status.exit_code.value == code
    assert not status.HasField("signal")


def assert_killed_by(status: pb.JobStatus, signum: int) -> None:
    got = (pb.JobState.Name(status.state), status.killed, status.signal.value, status.signal_name)
    assert got == ("JOB_STATE_KILLED", True, signum, signal.Signals(signum).name)
    assert not status.HasField("exit_code")


async def test_a_job_that_exits_reports_its_exit_code(mode_daemon: Daemon) -> None:
    async with mode_daemon.client() as rund:
        statuses = await in_parallel(
            *(run_to_end(rund, "sh", "-c", f"exit {code}") for code in EXIT_CODES)
        )
    for code, status in zip(EXIT_CODES, statuses, strict=True):
        assert_exited(status, code)


async def test_a_job_that_kills_itself_reports_the_signal(mode_daemon: Daemon) -> None:
    async with mode_daemon.client() as rund:
        statuses = await in_parallel(
            *(
                run_to_end(rund, "sh", "-c", f"ulimit -c 0; kill -{signum.name[3:]} $$")
                for signum in SIGNALS
            )
        )
    for signum, status in zip(SIGNALS, statuses, strict=True):
        assert_killed_by(status, signum)


async def test_a_job_killed_from_the_host_reports_the_signal_and_its_pid_is_its_program(
    mode_daemon: Daemon,
) -> None:
    async def kill_from_host(rund: RundClient, signum: int) -> pb.JobStatus:
        job_id = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", "ulimit -c 0; exec sleep 1000"])
        )
        pid = (await rund.status(job_id)).pid
        # the program, not a helper or rund-init: once it has exec'd sleep
        with trio.fail_after(10):
            while Path(f"/proc/{pid}/cmdline").read_bytes() != b"sleep\x001000\x00":
                await trio.sleep(0.01)
        os.kill(pid, signum)
        return await wait_for_end(rund, job_id)

    async with mode_daemon.client() as rund:
        statuses = await in_parallel(*(kill_from_host(rund, signum) for signum in SIGNALS))
    for signum, status in zip(SIGNALS, statuses, strict=True):
        assert_killed_by(status, signum)

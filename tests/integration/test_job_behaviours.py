"""Jobs that misbehave toward their output or their signals: Status, Log and
Stop stay correct, with the daemon's default isolation (the job under
``rund-init`` in its own namespaces) and without namespaces (the job is the
daemon's direct child)."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki, start_daemon
from tests.procs import live_pids


@pytest.fixture(params=[True, False], ids=["namespaces", "no-namespaces"])
async def daemon(
    request: pytest.FixtureRequest, nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> Daemon:
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        isolation=IsolationPolicy(
            namespaces=request.param,
            default_profile=Profile.CONTAINED if request.param else Profile.HOST,
        ),
    )


def sh(script: str) -> pb.JobStartRequest:
    return pb.JobStartRequest(name="sh", args=["-c", script])


async def read_all(rund: RundClient, job_id: str) -> bytes:
    return b"".join([chunk.stdout async for chunk in rund.log(job_id)])


async def test_a_job_that_closes_its_output_but_runs_on_keeps_its_log_open_until_stopped(
    daemon: Daemon, job_visible_dir: Path
) -> None:
    closed = job_visible_dir / "closed"
    os.mkfifo(closed, 0o666)
    closed.chmod(0o666)  # a contained job's root is not the host's: it needs "other" write
    async with daemon.client() as rund:
        job_id = await rund.start(sh(f"echo bye; exec >&- 2>&-; echo > {closed}; exec sleep 300"))
        stream = rund.log(job_id)
        assert (await anext(stream)).stdout == b"bye\n"
        await trio.to_thread.run_sync(closed.read_text, abandon_on_cancel=True)
        ended = trio.Event()

        async def follow_to_the_end() -> None:
            async for chunk in stream:
                raise AssertionError(f"output after the job closed it: {chunk}")
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow_to_the_end)
            # Whatever the daemon makes of the closed pipes, it has done it now.
            await trio.testing.wait_all_tasks_blocked()
            assert not ended.is_set(), "the log ended while the job was still running"
            running = await rund.status(job_id)
            stopped = await rund.stop(job_id)
        assert ended.is_set()
        again = await rund.status(job_id)
        history = await read_all(rund, job_id)
    assert running.state == pb.JOB_STATE_RUNNING
    assert (stopped.state, stopped.signal_name) == (pb.JOB_STATE_STOPPED, "SIGKILL")
    assert again == stopped
    assert history == b"bye\n"


async def test_a_job_that_forks_a_child_and_exits_ends_with_its_own_exit_code(
    daemon: Daemon,
) -> None:
    marker = str(secrets.randbelow(10**9) + 10**9)
    async with daemon.client() as rund:
        job_id = await rund.start(sh(f"sleep {marker} & echo parent; exit 3"))
        with trio.fail_after(10):  # the child holds the pipes: at most the linger
            output = await read_all(rund, job_id)
        status = await rund.status(job_id)
        after_stop = await rund.stop(job_id)
    assert output == b"parent\n"
    assert (status.state, status.exit_code.value, status.stopped) == (
        pb.JOB_STATE_EXITED,
        3,
        False,
    )
    assert after_stop == status
    assert live_pids(cmdline=f"sleep\0{marker}\0".encode()) == []


async def test_stop_of_a_job_that_ignores_sigterm_escalates_to_sigkill_after_the_grace(
    daemon: Daemon,
) -> None:
    grace = 0.5
    async with daemon.client() as rund:
        job_id = await rund.start(sh("trap '' TERM; echo ready; exec sleep 300"))
        stream = rund.log(job_id)
        assert (await anext(stream)).stdout == b"ready\n"
        asked = trio.current_time()
        with trio.fail_after(grace + 10):
            stopped = await rund.stop(job_id, grace=timedelta(seconds=grace))
        took = trio.current_time() - asked
        rest = b"".join([chunk.stdout async for chunk in stream])
        status = await rund.status(job_id)
    assert took >= grace
    assert (stopped.state, stopped.stopped, stopped.killed) == (pb.JOB_STATE_STOPPED, True, True)
    assert (stopped.signal.value, stopped.signal_name) == (9, "SIGKILL")
    assert not stopped.HasField("exit_code")
    assert status == stopped
    assert rest == b""

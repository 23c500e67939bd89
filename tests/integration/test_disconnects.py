"""Clients that vanish mid-request — a TCP reset right after the request, a
client process SIGKILLed while it follows a log — cost the daemon nothing:
no task, no file descriptor, and no harm to the job or its other subscribers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import trio

from rund_trio.api import rund_pb2 as pb
from tests.conftest import Daemon
from tests.raw_grpc import RawTls, raw_request
from tests.resources import open_fds, trio_tasks

RUND = shutil.which("rund-trio", path=str(Path(sys.executable).parent))
LOGS, STARTS = 45, 5
"""Per round: Log requests, reset once the daemon streams to all of them; then
Start requests one at a time, each reset once the daemon handles it (in about
four of ten, measured, the reset comes while the job is being started)."""
LOGS_AND_STARTS = LOGS + STARTS


async def wait_for_requests(daemon: Daemon, count: int, *, at_least: bool = True) -> None:
    """Until the daemon runs at least (or at most) ``count`` requests."""
    server = daemon.running.server
    while server.requests < count if at_least else server.requests > count:
        await server.wait_until_requests_change()


async def settled_counts(daemon: Daemon) -> tuple[int, int]:
    """Open fds and trio tasks once a first job has come and gone (the fork
    server and the cgroup watcher are started then) and the daemon is idle."""
    async with daemon.client() as rund:
        warmup = await rund.start(pb.JobStartRequest(name="true"))
        await rund.wait(warmup)
    await daemon.running.server.wait_until_idle()
    return open_fds(), trio_tasks()


async def test_1000_clients_reset_mid_log_or_mid_start_leave_no_task_or_descriptor(
    daemon: Daemon, job_visible_dir: Path
) -> None:
    release = job_visible_dir / "release"
    os.mkfifo(release)
    context = daemon.pki.client_tls("alice").client_context()
    supervisor = daemon.running.supervisor
    fds_before, tasks_before = await settled_counts(daemon)
    async with daemon.client() as rund:
        job_id = await rund.start(
            pb.JobStartRequest(
                name="sh", args=["-c", f"echo before; read x < {release}; seq 1 100000"]
            )
        )
        log_request = raw_request("Log", pb.JobIdentifier(ulid=job_id))
        start_request = raw_request("Start", pb.JobStartRequest(name="true"))
        jobs_before = set(supervisor.jobs)
        stream = rund.log(job_id)
        assert (await anext(stream)).stdout == b"before\n"  # the one subscriber that stays

        first = await RawTls.connect(daemon, context)
        session = await first.ticket()
        await first.reset()
        resumed = 0

        async def connect() -> RawTls:
            nonlocal resumed
            connection = await RawTls.connect(daemon, context, session)
            resumed += connection.tls.session_reused
            return connection

        async def log_then_reset() -> None:
            connection = await connect()
            await connection.send(log_request)
            await all_following.wait()  # the daemon streams to every one of them
            await connection.reset()

        async def start_then_reset() -> None:
            connection = await connect()
            await connection.send(start_request)
            await wait_for_requests(daemon, 2)  # the daemon is starting the job
            await connection.reset()

        with trio.fail_after(120):
            for _ in range(1000 // LOGS_AND_STARTS):
                all_following = trio.Event()
                async with trio.open_nursery() as nursery:
                    for _ in range(LOGS):
                        nursery.start_soon(log_then_reset)
                    await wait_for_requests(daemon, 1 + LOGS)
                    all_following.set()
                for _ in range(STARTS):
                    await start_then_reset()
                    await wait_for_requests(daemon, 1, at_least=False)
            await trio.to_thread.run_sync(release.write_text, "go\n", abandon_on_cancel=True)
            rest = b"".join([chunk.stdout async for chunk in stream])
            status = await rund.status(job_id)
            # (jobs that already ended are no longer held: nothing to wait for)
            started = [job for job_id, job in supervisor.jobs.items() if job_id not in jobs_before]
            for job in started:
                await job.done.wait()
        assert rest == b"".join(b"%d\n" % i for i in range(1, 100001))
        assert status.state == pb.JOB_STATE_EXITED and status.exit_code.value == 0
    print(
        f"{resumed} of 1000 handshakes resumed a session; "
        f"{len(started)} of 100 Starts reset mid-request started their job anyway"
    )
    for job in started:
        assert job.snapshot().exit_code == 0
    with trio.fail_after(10):
        await daemon.running.server.wait_until_idle()
    assert (open_fds(), trio_tasks()) == (fds_before, tasks_before)


async def test_cli_clients_sigkilled_mid_log_leave_no_task_or_descriptor(daemon: Daemon) -> None:
    assert RUND is not None
    tls = daemon.pki.client_tls("alice")
    fds_before, tasks_before = await settled_counts(daemon)
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sh", args=["-c", "echo up; sleep 300"]))
        argv = [
            RUND, "client", "log", "--addr", daemon.addr,
            "--ca", tls.ca, "--cert", tls.cert, "--key", tls.key, job_id,
        ]  # fmt: skip
        with trio.fail_after(30):
            clients = [
                await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL) for _ in range(3)
            ]
            await wait_for_requests(daemon, 3)
            for client in clients:
                client.send_signal(signal.SIGKILL)
                assert await client.wait() == -signal.SIGKILL
            await wait_for_requests(daemon, 0, at_least=False)
        status = await rund.stop(job_id)
    assert status.stopped
    with trio.fail_after(10):
        await daemon.running.server.wait_until_idle()
    assert (open_fds(), trio_tasks()) == (fds_before, tasks_before)

"""``rund-trio serve`` ended by a signal while it works: SIGTERM with jobs and
subscribers (a clean exit), SIGKILL (its jobs die with it, and the next daemon
on the same state directory and cgroup subtree clears what it left)."""

from __future__ import annotations

import secrets
import signal
import ssl
import time
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import ConnectionFailed, RundError
from rund_trio.tls.context import TlsFiles
from tests.cli.conftest import Client, Daemon, Pki, clean_env, spawn_daemon
from tests.conftest import private_cgroup_root
from tests.procs import live_pids, process_is_gone, process_tree, wait_until_gone

SHUTDOWN_BOUND = 10.0
"""Seconds a daemon with 100 jobs and 50 subscribers may take to exit on SIGTERM."""
NO_NAMESPACES = ("--no-namespaces", "--default-profile", "host")
"""Jobs in the daemon's namespaces: only host jobs can run so."""


def client_context(pki: Pki, name: str = "alice") -> ssl.SSLContext:
    return TlsFiles(ca=pki.ca, cert=pki.cert(name), key=pki.key(name)).client_context()


def unique_sleep() -> tuple[str, bytes]:
    """A ``sleep`` argument no other process uses, and its /proc cmdline."""
    marker = str(secrets.randbelow(10**9) + 10**9)
    return marker, f"sleep\0{marker}\0".encode()


def job_leaves(root: Path | None) -> list[str]:
    if root is None or not root.exists():
        return []
    return [entry.name for entry in root.iterdir() if entry.is_dir()]


async def first_output(rund: RundClient, job_id: str) -> bytes:
    async for chunk in rund.log(job_id):
        if chunk.stdout:
            return chunk.stdout
    raise AssertionError("the job ended without output")


async def exit_code(daemon: Daemon) -> int:
    code: int = await trio.to_thread.run_sync(daemon.process.wait, abandon_on_cancel=True)
    return code


async def test_sigterm_with_100_jobs_and_50_subscribers_exits_0_and_leaves_nothing(
    pki: Pki, tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    cgroup_root = private_cgroup_root()
    cgroup_args = ["--cgroup-root", str(cgroup_root)] if cgroup_root else []
    marker, sleep_cmdline = unique_sleep()
    context = client_context(pki)
    daemon = spawn_daemon(
        [*pki.server_args(), *cgroup_args], cwd=tmp_path, env=clean_env(TMPDIR=str(tmpdir))
    )
    try:
        (state_dir,) = tmpdir.glob("rund-trio-*")
        async with RundClient.connect(daemon.addr, context) as rund:
            request = pb.JobStartRequest(name="sh", args=["-c", f"echo up; exec sleep {marker}"])
            job_ids = [await rund.start(request) for _ in range(100)]
            for job_id in job_ids:  # every job's whole tree is there
                assert await first_output(rund, job_id) == b"up\n"
            job_pids = []
            for job_id in job_ids:
                job_pids += process_tree((await rund.status(job_id)).pid)
        assert len(live_pids(cmdline=sleep_cmdline)) == 100
        assert len(job_leaves(cgroup_root)) == (100 if cgroup_root else 0)

        endings: list[str] = []
        subscribed = trio.Semaphore(0)

        async def subscriber(job_id: str) -> None:
            async with RundClient.connect(daemon.addr, context) as rund:
                stream = rund.log(job_id)
                assert (await anext(stream)).stdout == b"up\n"
                subscribed.release()
                try:
                    async for _ in stream:
                        pass
                    endings.append("OK")
                except ConnectionFailed as error:
                    shut_down = "it shut down or restarted" in str(error)
                    endings.append("ConnectionFailed" if shut_down else str(error))
                except RundError as error:
                    endings.append(type(error).__name__)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for job_id in job_ids[:50]:
                    nursery.start_soon(subscriber, job_id)
                for _ in range(50):
                    await subscribed.acquire()
                signalled = time.monotonic()
                daemon.process.send_signal(signal.SIGTERM)
                with trio.fail_after(SHUTDOWN_BOUND):
                    code = await exit_code(daemon)
                took = time.monotonic() - signalled
    finally:
        daemon.stop(signal.SIGKILL)
    print(f"SIGTERM to exit with 100 jobs and 50 subscribers: {took:.2f} s; streams: {endings}")
    assert code == 0, daemon.stderr
    # The daemon closes every connection on its way out: each subscriber's
    # stream ends, as a lost connection.
    assert endings == ["ConnectionFailed"] * 50
    for pid in job_pids:
        assert process_is_gone(pid)
    assert live_pids(cmdline=sleep_cmdline) == []
    assert not state_dir.exists()
    assert list(tmpdir.iterdir()) == []
    assert cgroup_root is None or not cgroup_root.exists()


async def test_sigkill_takes_every_process_of_every_job_with_the_daemon(
    pki: Pki, tmp_path: Path
) -> None:
    marker, sleep_cmdline = unique_sleep()
    daemon = spawn_daemon(pki.server_args(), cwd=tmp_path)
    try:
        async with RundClient.connect(daemon.addr, client_context(pki)) as rund:
            jobs = [
                await rund.start(
                    pb.JobStartRequest(
                        name="sh", args=["-c", f"sleep {marker} & sleep {marker} & echo up; wait"]
                    )
                )
                for _ in range(3)
            ]
            trees = []
            for job_id in jobs:
                await first_output(rund, job_id)
                trees.append(process_tree((await rund.status(job_id)).pid))
        assert len(live_pids(cmdline=sleep_cmdline)) == 6
    finally:
        daemon.stop(signal.SIGKILL)
    with trio.fail_after(5):
        for pid in (pid for tree in trees for pid in tree):
            await wait_until_gone(pid)
    assert live_pids(cmdline=sleep_cmdline) == []


async def test_sigkill_takes_a_job_run_as_another_user_with_the_daemon(
    pki: Pki, tmp_path: Path
) -> None:
    marker, _ = unique_sleep()
    daemon = spawn_daemon(
        [*pki.server_args(), *NO_NAMESPACES, "--allow-uid", "65534", "--allow-gid", "65534"],
        cwd=tmp_path,
    )
    try:
        async with RundClient.connect(daemon.addr, client_context(pki)) as rund:
            request = pb.JobStartRequest(name="sleep", args=[marker])
            request.uid.value = request.gid.value = 65534
            pid = (await rund.status(await rund.start(request))).pid
    finally:
        daemon.stop(signal.SIGKILL)
    with trio.fail_after(5):
        await wait_until_gone(pid)


def test_the_next_daemon_on_the_state_dir_serves_the_output_a_killed_one_left(
    pki: Pki, tmp_path: Path
) -> None:
    args = [*pki.server_args(), "--state-dir", tmp_path / "state"]
    first = spawn_daemon(args, cwd=tmp_path)
    try:
        alice = Client(first, pki, "alice", tmp_path)
        assert alice("run", "--", "echo", "left behind").stdout == b"left behind\n"
        (job_id,) = alice("ps", "-a", "-q").stdout.decode().split()
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = spawn_daemon(args, cwd=tmp_path)
    try:
        alice = Client(second, pki, "alice", tmp_path)
        assert alice("log", job_id).stdout == b"left behind\n"
    finally:
        assert second.stop(signal.SIGTERM) == 0
    assert (tmp_path / "state" / f"{job_id}.log").exists()


async def test_the_next_daemon_on_the_cgroup_root_kills_and_removes_what_a_killed_one_left(
    pki: Pki, tmp_path: Path
) -> None:
    cgroup_root = private_cgroup_root()
    if cgroup_root is None:
        pytest.skip("no cgroup2 hierarchy on this machine")
    marker, sleep_cmdline = unique_sleep()
    # Without namespaces the job's own process dies with the daemon, but a
    # child of it outlives both: only its cgroup still holds it.
    args = [*pki.server_args(), *NO_NAMESPACES, "--cgroup-root", cgroup_root]
    first = spawn_daemon(args, cwd=tmp_path)
    try:
        async with RundClient.connect(first.addr, client_context(pki)) as rund:
            job_id = await rund.start(
                pb.JobStartRequest(name="sh", args=["-c", f"sleep {marker} & echo up; wait"])
            )
            await first_output(rund, job_id)
    finally:
        first.stop(signal.SIGKILL)
    (orphan,) = live_pids(cmdline=sleep_cmdline)
    assert job_leaves(cgroup_root) == [job_id]
    second = spawn_daemon(args, cwd=tmp_path)
    try:
        # Listening: start-up, the stale leaves' removal included, is over.
        # The leaf could only go once the orphan left it, which a process does
        # in its exit, a moment before it is a zombie: awaited, not looked at.
        assert job_leaves(cgroup_root) == []
        with trio.fail_after(10):
            await wait_until_gone(orphan)
        assert "removed 1 job cgroups left by an earlier daemon" in second.stderr
    finally:
        assert second.stop(signal.SIGTERM) == 0
    assert not cgroup_root.exists()

"""Job records and output survive the daemon: ``rund-trio serve`` stopped by
SIGTERM or SIGKILLed at random moments under load, then started again on the
same ``--state-dir``, serves every retained job with the same owners; and a
job database it cannot use is refused, untouched, with one line."""

from __future__ import annotations

import random
import signal
import sqlite3
import ssl
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.tls.context import TlsFiles
from tests.cli.conftest import Client, Daemon, Pki, rund, spawn_daemon
from tests.cli.test_errors import assert_one_line_error

ENDED_STATES = {
    pb.JOB_STATE_EXITED,
    pb.JOB_STATE_KILLED,
    pb.JOB_STATE_STOPPED,
    pb.JOB_STATE_LOST,
}


def context(pki: Pki, name: str = "alice") -> ssl.SSLContext:
    return TlsFiles(ca=pki.ca, cert=pki.cert(name), key=pki.key(name)).client_context()


def serve_args(pki: Pki, state_dir: Path) -> list[str | Path]:
    return [*pki.server_args(), "--state-dir", state_dir]


async def full_log(rund: RundClient, job_id: str) -> bytes:
    out = b""
    async for chunk in rund.log(job_id):
        out += chunk.stdout
    return out


async def test_a_restart_after_sigterm_serves_every_job_with_its_output_and_owner(
    pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
    try:
        async with RundClient.connect(first.addr, context(pki)) as alice:
            done = await alice.start(pb.JobStartRequest(name="sh", args=["-c", "echo out; exit 3"]))
            await alice.wait(done)
            running = await alice.start(
                pb.JobStartRequest(name="sh", args=["-c", "echo up; exec sleep 600"])
            )
            async for _ in alice.log(running):
                break
    finally:
        assert first.stop(signal.SIGTERM) == 0
    second = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
    try:
        async with RundClient.connect(second.addr, context(pki)) as alice:
            ended = await alice.status(done)
            killed = await alice.wait(running)
            listed = [job.ulid for job in (await alice.list_jobs()).jobs]
            outputs = (await full_log(alice, done), await full_log(alice, running))
        async with RundClient.connect(second.addr, context(pki, "bob")) as bob:
            with pytest.raises(RpcError) as stranger:
                await bob.status(done)
            assert list((await bob.list_jobs()).jobs) == []
    finally:
        assert second.stop(signal.SIGTERM) == 0
    assert (ended.state, ended.exit_code.value) == (pb.JOB_STATE_EXITED, 3)
    # The shutdown killed it, and said so in its record.
    assert (killed.state, killed.signal_name) == (pb.JOB_STATE_KILLED, "SIGKILL")
    assert listed == [running, done]
    assert outputs == (b"out\n", b"up\n")
    assert stranger.value.code == "NOT_FOUND"


async def test_a_job_running_when_the_daemon_was_sigkilled_is_reported_lost(
    pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
    try:
        async with RundClient.connect(first.addr, context(pki)) as alice:
            job_id = await alice.start(
                pb.JobStartRequest(name="sh", args=["-c", "echo partial; exec sleep 600"])
            )
            async for _ in alice.log(job_id):
                break
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
    try:
        async with RundClient.connect(second.addr, context(pki)) as alice:
            status = await alice.wait(job_id)
            output = await full_log(alice, job_id)
        result = Client(second, pki, "alice", tmp_path)("ps", "-a")
    finally:
        assert second.stop(signal.SIGTERM) == 0
    assert (status.state, status.killed, status.HasField("exit_code")) == (
        pb.JOB_STATE_LOST,
        True,
        False,
    )
    assert output == b"partial\n"
    assert "1 jobs were running when the previous daemon ended" in second.stderr
    assert f"{job_id}  sh -c 'echo partial; exec sleep 600'  lost" in result.stdout.decode()


ROUNDS = 6


async def test_sigkills_at_random_moments_under_load_lose_no_job_and_no_received_output(
    pki: Pki, tmp_path: Path
) -> None:
    """Each round: clients start jobs that write output and follow their logs
    while the daemon is SIGKILLed at a random moment. The next daemon on the
    state directory must start without help and serve every job whose id a
    Start returned, ended, with at least the output a subscriber received."""
    state = tmp_path / "state"
    rng = random.Random(1234)
    started: list[str] = []
    received: dict[str, bytes] = {}

    async def client_load(daemon: Daemon) -> None:
        try:
            async with RundClient.connect(daemon.addr, context(pki)) as rund:
                while True:
                    job_id = await rund.start(
                        pb.JobStartRequest(
                            name="sh", args=["-c", "for i in 1 2 3 4 5; do echo line $i; done"]
                        )
                    )
                    started.append(job_id)
                    data = b""
                    async for chunk in rund.log(job_id):
                        data += chunk.stdout
                        received[job_id] = data
        except Exception:
            # The daemon died under it, however the transport words that
            # (today some of it escapes as anyio's errors, in groups).
            return

    for _ in range(ROUNDS):
        daemon = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(client_load, daemon)
                await trio.sleep(rng.uniform(0.2, 1.5))
                daemon.process.kill()
                await trio.to_thread.run_sync(daemon.process.wait)
        finally:
            daemon.stop(signal.SIGKILL)

    last = spawn_daemon(serve_args(pki, state), cwd=tmp_path)
    try:
        async with RundClient.connect(last.addr, context(pki)) as rund:
            listed = {job.ulid: job.state async for job in rund.all_jobs()}
            for job_id in started:
                status = await rund.status(job_id)
                assert status.state in ENDED_STATES
                output = await full_log(rund, job_id)
                assert output.startswith(received.get(job_id, b"")), job_id
    finally:
        assert last.stop(signal.SIGTERM) == 0
    assert len(started) > ROUNDS
    assert set(started) <= set(listed)
    assert all(state in ENDED_STATES for state in listed.values())


def test_a_database_from_a_newer_version_is_refused_untouched(pki: Pki, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    database = state / "jobs.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA application_id = 1381322308")  # rund-trio's
        db.execute("PRAGMA user_version = 99")
        db.execute("CREATE TABLE from_the_future (x)")
    before = database.read_bytes()
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--no-cgroups",
        "--state-dir", state, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(
        result, "written by a newer rund-trio (schema version 99", "run that newer version"
    )
    assert database.read_bytes() == before


@pytest.mark.parametrize(
    "damage",
    [
        b"this is not a database at all" * 100,
        b"SQLite format 3\x00" + bytes(range(256)) * 16,
    ],
    ids=["garbage", "torn-header"],
)
def test_a_damaged_database_is_refused_untouched_with_what_to_do(
    pki: Pki, tmp_path: Path, damage: bytes
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    database = state / "jobs.sqlite3"
    database.write_bytes(damage)
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--no-cgroups",
        "--state-dir", state, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, f"cannot use the job database {database}", "move it aside")
    assert database.read_bytes() == damage
    assert sorted(path.name for path in state.iterdir()) == ["jobs.sqlite3"]

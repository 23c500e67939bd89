"""Every RPC against a real daemon over mutual TLS on loopback, with real
processes, as a client would drive it."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import ResourceExhausted, RpcError
from rund_trio.jobs.spec import MAX_ARGV_BYTES
from rund_trio.rpc import TransportConfig
from rund_trio.server.admission import AdmissionLimits
from tests.conftest import Daemon, Pki, start_daemon
from tests.procs import live_pids
from tests.resources import open_fds, trio_tasks


def start_request(*argv: str, **limits: int) -> pb.JobStartRequest:
    request = pb.JobStartRequest(name=argv[0], args=argv[1:])
    for field, value in limits.items():
        getattr(request, field).value = value
    return request


async def read_log(daemon: Daemon, job_id: str, client: str = "alice") -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    async with daemon.client(client) as rund:
        async for chunk in rund.log(job_id):
            out += chunk.stdout
            err += chunk.stderr
    return bytes(out), bytes(err)


async def run_to_end(daemon: Daemon, *argv: str) -> tuple[pb.JobStatus, bytes, bytes]:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request(*argv))
        out, err = await read_log(daemon, job_id)
        return await rund.status(job_id), out, err


async def test_start_returns_a_ulid_while_the_job_runs(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sleep", "30"))
        status = await rund.status(job_id)
    assert len(job_id) == 26
    assert status.state == pb.JOB_STATE_RUNNING
    assert not status.HasField("exit_code")
    assert status.pid > 0 and (status.name, list(status.args)) == ("sleep", ["30"])


async def test_status_after_exit_has_exit_code_and_cpu_times(daemon: Daemon) -> None:
    status, _, _ = await run_to_end(
        daemon, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3"
    )
    assert (status.state, status.exit_code.value, status.killed, status.stopped) == (
        pb.JOB_STATE_EXITED,
        3,
        False,
        False,
    )
    assert status.user_time.ToNanoseconds() > 0
    assert status.HasField("ended_at")


async def test_log_streams_stdout_and_stderr_separately(daemon: Daemon) -> None:
    _, out, err = await run_to_end(daemon, "sh", "-c", "echo out; echo err >&2; echo more")
    assert (out, err) == (b"out\nmore\n", b"err\n")


async def test_a_subscriber_after_the_end_gets_the_full_history(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("seq", "1", "50000"))
        first, _ = await read_log(daemon, job_id)
        assert (await rund.status(job_id)).state == pb.JOB_STATE_EXITED
        late, _ = await read_log(daemon, job_id)
    assert first == late == b"".join(b"%d\n" % i for i in range(1, 50001))


async def test_two_subscribers_receive_200_mb_byte_exact(daemon: Daemon) -> None:
    command = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 209715200"
    expected = hashlib.sha256(
        subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    ).hexdigest()
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sh", "-c", command))
    digests: list[str] = []

    async def subscriber() -> None:
        digest = hashlib.sha256()
        async with daemon.client() as rund:
            async for chunk in rund.log(job_id):
                assert not chunk.stderr
                digest.update(chunk.stdout)
        digests.append(digest.hexdigest())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscriber)
        nursery.start_soon(subscriber)
    assert digests == [expected, expected]


async def test_log_chunks_are_large(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("head", "-c", "4000000", "/dev/zero"))
        sizes = [len(chunk.stdout) async for chunk in rund.log(job_id)]
    assert sum(sizes) == 4_000_000
    assert max(sizes) >= 32 * 1024
    assert len(sizes) < 4_000_000 / 16384


async def test_stop_kills_the_whole_process_tree(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            start_request("sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait")
        )
        async for chunk in rund.log(job_id):
            if chunk.stdout:
                break
        pid = (await rund.status(job_id)).pid
        status = await rund.stop(job_id)
    assert (status.stopped, status.killed, status.signal_name) == (True, True, "SIGKILL")
    assert status.state == pb.JOB_STATE_STOPPED
    assert live_pids(group=pid) == []


async def test_stop_with_grace_lets_the_job_handle_sigterm(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            start_request(
                "sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
            )
        )
        async for chunk in rund.log(job_id):
            if chunk.stdout:
                break
        status = await rund.stop(job_id, grace=timedelta(seconds=30))
        out, _ = await read_log(daemon, job_id)
    assert (status.stopped, status.killed, status.exit_code.value) == (True, False, 0)
    assert out == b"ready\nbye\n"


async def test_stop_of_an_ended_job_returns_its_status_unchanged(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("true"))
        await read_log(daemon, job_id)
        before = await rund.status(job_id)
        after = await rund.stop(job_id)
    assert after == before
    assert not after.stopped and after.exit_code.value == 0


async def test_a_job_killed_by_a_signal_reports_it(daemon: Daemon) -> None:
    status, _, _ = await run_to_end(daemon, "sh", "-c", "kill -SEGV $$")
    assert (status.killed, status.signal.value, status.signal_name) == (True, 11, "SIGSEGV")
    assert status.state == pb.JOB_STATE_KILLED and not status.HasField("exit_code")


async def expect_error(daemon: Daemon, code: str, request: pb.JobStartRequest) -> str:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(request)
    assert error.value.code == code
    return error.value.message


async def test_start_of_a_missing_program_fails_with_the_os_reason(daemon: Daemon) -> None:
    message = await expect_error(daemon, "FAILED_PRECONDITION", start_request("no-such-program"))
    assert "No such file or directory" in message and "no-such-program" in message


async def test_an_error_quoting_a_huge_name_is_bounded(
    daemon: Daemon,
) -> None:
    message = await expect_error(daemon, "FAILED_PRECONDITION", start_request("n" * 300_000))
    assert len(message) <= 1000 and " … " in message
    assert message.startswith("cannot execute 'nnn")


async def test_start_of_a_file_without_execute_permission_fails(
    daemon: Daemon, job_visible_dir: Path
) -> None:
    script = job_visible_dir / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    message = await expect_error(daemon, "FAILED_PRECONDITION", start_request(str(script)))
    assert "Permission denied" in message


async def test_start_with_an_empty_name_is_invalid(daemon: Daemon) -> None:
    assert "empty" in await expect_error(daemon, "INVALID_ARGUMENT", start_request(""))


async def test_start_with_a_nul_byte_is_invalid(daemon: Daemon) -> None:
    message = await expect_error(daemon, "INVALID_ARGUMENT", start_request("echo", "a\0b"))
    assert "argument 1 contains a NUL byte" in message


async def test_start_with_an_argv_over_the_default_cap_is_resource_exhausted(
    daemon: Daemon,
) -> None:
    request = start_request("echo", *(["x" * 4095] * (MAX_ARGV_BYTES // 4096 + 1)))
    message = await expect_error(daemon, "RESOURCE_EXHAUSTED", request)
    assert "at most 1048576 bytes" in message and "--max-argv-bytes" in message


@pytest.mark.parametrize("megabytes", [5, 20], ids=["within", "beyond"])
async def test_a_request_over_the_size_cap_is_answered_whatever_the_window(
    daemon: Daemon, megabytes: int
) -> None:
    """Refused from its length prefix, with the rest still being sent: within
    or beyond the stream's flow-control window (8 MiB)."""
    request = start_request("echo", *["a" * 1_000_000] * megabytes)
    with trio.fail_after(20):
        message = await expect_error(daemon, "RESOURCE_EXHAUSTED", request)
    assert "at most 4194304 bytes are accepted (--max-request-size)" in message


async def test_the_argv_cap_is_configurable(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_argv_bytes=16)
    # "echo\0" + "0123456789\0" is 16 bytes: at the cap
    assert (await run_to_end(daemon, "echo", "0123456789"))[1] == b"0123456789\n"
    message = await expect_error(daemon, "RESOURCE_EXHAUSTED", start_request("echo", "0123456789a"))
    assert "the command line is 17 bytes; at most 16 bytes" in message


async def test_without_an_argv_cap_the_kernel_limit_applies(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_argv_bytes=None)
    chunk = "x" * 100_000  # 11 of them: over the default cap, under Linux's limits
    _, out, _ = await run_to_end(daemon, "sh", "-c", 'echo "$#"', "sh", *[chunk] * 11)
    assert out == b"11\n"


async def test_start_with_a_limit_this_host_cannot_enforce_is_refused(daemon: Daemon) -> None:
    message = await expect_error(
        daemon, "FAILED_PRECONDITION", start_request("true", max_memory_usage=1 << 20)
    )
    assert "memory" in message


async def test_a_malformed_job_id_is_invalid(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as error:
            await rund.status("not-a-ulid")
    assert error.value.code == "INVALID_ARGUMENT"


async def test_an_unknown_job_id_is_not_found(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        for call in (rund.status, rund.stop):
            with pytest.raises(RpcError) as error:
                await call("01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert error.value.code == "NOT_FOUND"


async def test_abandoned_log_streams_leave_no_task_or_descriptor(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    # 200 connections at once from one address: beyond the default per-source
    # handshake cap, which is not what this test is about
    daemon = await start_daemon(
        nursery, pki, tmp_path, admission=AdmissionLimits(max_handshakes_per_source=None)
    )
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sleep", "300"))
    await daemon.running.server.wait_until_idle()
    fds_before, tasks_before = open_fds(), trio_tasks()

    async def abandon_log() -> None:
        async with daemon.client() as rund:
            async for _ in rund.log(job_id):
                pass

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(abandon_log)
            await daemon.running.server.wait_for_requests(200)
            nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        await daemon.running.server.wait_until_idle()
    assert (open_fds(), trio_tasks()) == (fds_before, tasks_before)


@pytest.mark.parametrize("job", ["echo first; exec sleep 300", "exec yes first"])
async def test_a_log_the_client_stops_reading_is_ended_on_the_daemon_at_once(
    daemon: Daemon, job: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sh", "-c", job))
        log = rund.log(job_id)
        assert (await anext(log)).stdout.startswith(b"first\n")
        await log.aclose()  # the connection stays open
        with trio.fail_after(10):
            while daemon.running.server.requests:
                await daemon.running.server.wait_until_requests_change()
        await rund.stop(job_id)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_the_daemon_keeps_serving_after_errors(daemon: Daemon) -> None:
    await expect_error(daemon, "INVALID_ARGUMENT", start_request(""))
    status, out, _ = await run_to_end(daemon, "echo", "still here")
    assert out == b"still here\n" and status.exit_code.value == 0


async def test_a_call_beyond_the_daemons_stream_cap_is_refused_by_the_client(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(
        nursery, pki, tmp_path, transport=TransportConfig(max_streams_per_connection=2)
    )
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sh", "-c", "echo up; sleep 300"))
        open_streams = [rund.log(job_id), rund.log(job_id)]
        for stream in open_streams:
            assert (await anext(stream)).stdout == b"up\n"
        with pytest.raises(ResourceExhausted) as error:
            await rund.status(job_id)
        assert "--max-streams-per-connection" in str(error.value)
        async with daemon.client() as another_connection:
            assert (await another_connection.stop(job_id)).stopped
        for stream in open_streams:
            await stream.aclose()


async def test_log_streams_beyond_the_per_client_cap_are_resource_exhausted(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_log_streams_per_client=2)
    async with daemon.client() as rund:
        job_id = await rund.start(start_request("sh", "-c", "echo up; sleep 300"))
        open_streams = [rund.log(job_id), rund.log(job_id)]
        for stream in open_streams:
            assert (await anext(stream)).stdout == b"up\n"
        with pytest.raises(RpcError) as error:
            await anext(rund.log(job_id))
        assert error.value.code == "RESOURCE_EXHAUSTED"
        assert "log streams" in error.value.message
        async with daemon.client("bob") as bob:  # another client is not affected
            bobs_job = await bob.start(start_request("echo", "bob"))
            assert b"".join([chunk.stdout async for chunk in bob.log(bobs_job)]) == b"bob\n"
        for stream in open_streams:
            await stream.aclose()

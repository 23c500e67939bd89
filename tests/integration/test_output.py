"""Job output is journaled, not buffered: the daemon's memory does not grow
with it, and a subscriber that stops reading slows down nobody."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import RpcError
from tests.conftest import Daemon, Pki, start_daemon
from tests.raw_grpc import MAX_WINDOW, RawTls, raw_call

GIB = 1024**3


def resident_bytes() -> int:
    """This process's RSS: the daemon runs in it, in the test's nursery."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_a_job_writing_1_gib_grows_the_daemon_by_a_few_mib_at_most(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        warmup = await rund.start(pb.JobStartRequest(name="head", args=["-c", "1M", "/dev/zero"]))
        await rund.wait(warmup)
        before = resident_bytes()
        job_id = await rund.start(
            pb.JobStartRequest(name="head", args=["-c", str(GIB), "/dev/zero"])
        )
        with trio.fail_after(120):
            await rund.wait(job_id)
        status = await rund.status(job_id)
    growth = resident_bytes() - before
    assert status.exit_code.value == 0 and status.output_bytes == GIB
    assert growth < 8 * 1024**2, f"the daemon grew by {growth / 1024**2:.1f} MiB"


async def test_a_stalled_subscriber_slows_neither_the_job_nor_other_subscribers(
    daemon: Daemon,
) -> None:
    command = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 67108864"
    expected = hashlib.sha256(
        subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    ).hexdigest()
    async with daemon.client() as stalled, daemon.client() as reader:
        job_id = await stalled.start(pb.JobStartRequest(name="sh", args=["-c", command]))
        stalled_log = stalled.log(job_id)
        await anext(stalled_log)  # read one chunk, then never again
        digest = hashlib.sha256()
        with trio.fail_after(60):
            async for chunk in reader.log(job_id):
                digest.update(chunk.stdout)
        status = await reader.status(job_id)
        await stalled_log.aclose()
    assert digest.hexdigest() == expected
    assert status.state == pb.JOB_STATE_EXITED and status.exit_code.value == 0


async def test_a_log_of_a_job_whose_output_was_capped_ends_with_resource_exhausted(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, output_cap=1000)
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="head", args=["-c", "5000", "/dev/zero"]))
        received = b""
        with pytest.raises(RpcError) as error:
            async for chunk in rund.log(job_id):
                received += chunk.stdout
    assert received == bytes(1000)
    assert error.value.code == "RESOURCE_EXHAUSTED"
    assert error.value.message == (
        "4000 bytes of this job's output were dropped and are not in this log: "
        "the job's output reached --output-cap (1000 bytes per job)"
    )


async def test_a_log_of_a_job_within_every_cap_ends_ok(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="head", args=["-c", "5000", "/dev/zero"]))
        received = b"".join([chunk.stdout async for chunk in rund.log(job_id)])
    assert received == bytes(5000)


async def test_start_is_resource_exhausted_once_the_output_total_is_reached(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_output_total=4096)
    async with daemon.client() as rund:
        filler = await rund.start(pb.JobStartRequest(name="head", args=["-c", "8192", "/dev/zero"]))
        with pytest.raises(RpcError):
            async for _ in rund.log(filler):
                pass
        status = await rund.status(filler)
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true"))
    assert status.output_bytes + status.output_dropped_bytes == 8192
    assert status.output_error == "job output on this daemon reached --max-output-total (4 KiB)"
    assert error.value.code == "RESOURCE_EXHAUSTED"
    assert error.value.message == (
        "not starting jobs whose output could not be kept: "
        "job output on this daemon reached --max-output-total (4 KiB)"
    )


async def test_a_subscriber_slower_than_the_job_gets_every_byte_in_order_in_bounded_memory(
    daemon: Daemon,
) -> None:
    expected = b"".join(b"%d\n" % i for i in range(1, 5_000_001))
    async with daemon.client() as rund:
        warmup = await rund.start(pb.JobStartRequest(name="seq", args=["1", "100000"]))
        await rund.wait(warmup)
        before = resident_bytes()
        job_id = await rund.start(pb.JobStartRequest(name="seq", args=["1", "5000000"]))
    # A subscriber that lets the daemon send it 2 GiB, then reads nothing
    # until the job has written everything.
    subscriber = await RawTls.connect(daemon, daemon.pki.client_tls("alice").client_context())
    call, request = raw_call("Log", pb.JobIdentifier(ulid=job_id), window=MAX_WINDOW)
    await subscriber.send(request)
    with trio.fail_after(60):
        async with daemon.client() as waiter:
            await waiter.wait(job_id)
    growth = resident_bytes() - before
    with trio.fail_after(60):
        messages = await subscriber.responses(call)
    await subscriber.reset()
    received = b"".join(pb.JobLog.FromString(message).stdout for message in messages)
    assert received == expected
    assert growth < 8 * 1024**2, f"{len(expected) >> 20} MiB unread grew the daemon by {growth:_}"

"""Raw, malformed HTTP/2 and gRPC traffic over mutual TLS, as a broken or
hostile client would send it: each request is answered on its own stream with
a precise status (or the connection is closed cleanly when HTTP/2 itself is
broken); afterwards no task or descriptor is left and other clients are served."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.rpc import StatusCode, TransportConfig
from tests.conftest import Daemon, Pki, start_daemon
from tests.integration.rawh2 import (
    Answer,
    RawH2Client,
    grpc_message,
    raw_connection,
    request_headers,
)

UNKNOWN_JOB = pb.JobIdentifier(ulid="01ARZ3NDEKTSV4RRFFQ69G5FAV").SerializeToString()
MAX_REQUEST = 64 * 1024


@pytest.fixture
async def daemon(nursery: trio.Nursery, pki: Pki, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon with a small request cap, which must still serve after the test."""
    running = await start_daemon(
        nursery, pki, tmp_path, transport=TransportConfig(max_request_size=MAX_REQUEST)
    )
    yield running
    await assert_serves_a_normal_client(running)


async def assert_serves_a_normal_client(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="echo", args=["still serving"]))
        output = b"".join([chunk.stdout async for chunk in rund.log(job_id)])
    assert output == b"still serving\n"


@asynccontextmanager
async def connect(daemon: Daemon, **options: bool) -> AsyncIterator[RawH2Client]:
    """A raw connection; once it is closed the daemon must be idle (no
    connection or request task left) with no more descriptors than before."""
    fds_before = len(os.listdir("/proc/self/fd"))
    tls = daemon.pki.client_tls("alice").client_context()
    async with raw_connection(daemon.port, tls, **options) as client:
        yield client
    with trio.fail_after(10):
        await daemon.running.server.wait_until_idle()
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def assert_connection_still_serves(client: RawH2Client) -> None:
    """A well-formed request on the same connection is still answered."""
    answer = await client.answer(await client.request(grpc_message(UNKNOWN_JOB)))
    assert StatusCode(answer.grpc_status) == StatusCode.NOT_FOUND


def assert_status(answer: Answer, code: StatusCode, *words: str) -> None:
    assert StatusCode(answer.grpc_status) == code, answer.grpc_message
    for word in words:
        assert word in answer.grpc_message


STATUS_CASES = {
    "a truncated message is INVALID_ARGUMENT": (
        {"body": grpc_message(UNKNOWN_JOB, length=len(UNKNOWN_JOB) + 10)},
        StatusCode.INVALID_ARGUMENT,
        ["ended inside a message", f"{len(UNKNOWN_JOB)} of {len(UNKNOWN_JOB) + 10} bytes"],
    ),
    "a truncated length prefix is INVALID_ARGUMENT": (
        {"body": b"\0\0\0"},
        StatusCode.INVALID_ARGUMENT,
        ["ended inside a message", "3 of 5 (header)"],
    ),
    "a compressed flag without grpc-encoding is INVALID_ARGUMENT": (
        {"body": grpc_message(UNKNOWN_JOB, compressed=True)},
        StatusCode.INVALID_ARGUMENT,
        ["flagged compressed", "no grpc-encoding"],
    ),
    "a compressed request is UNIMPLEMENTED": (
        {
            "body": grpc_message(UNKNOWN_JOB, compressed=True),
            "headers": request_headers(extra=[("grpc-encoding", "gzip")]),
        },
        StatusCode.UNIMPLEMENTED,
        ["grpc-encoding 'gzip' is not supported"],
    ),
    "bytes that are no protobuf message are INVALID_ARGUMENT": (
        {"body": grpc_message(b"\xff\xff\xff\xff")},
        StatusCode.INVALID_ARGUMENT,
        ["not a valid rund.JobIdentifier message"],
    ),
    "a request without a message is INVALID_ARGUMENT": (
        {"body": None},
        StatusCode.INVALID_ARGUMENT,
        ["the request has no message"],
    ),
    "an unknown method is UNIMPLEMENTED": (
        {"body": grpc_message(UNKNOWN_JOB), "headers": request_headers("Restart")},
        StatusCode.UNIMPLEMENTED,
        ["unknown method /rund.JobController/Restart"],
    ),
    "an unknown service is UNIMPLEMENTED": (
        {"body": grpc_message(b""), "headers": request_headers("Check", service="grpc.Health")},
        StatusCode.UNIMPLEMENTED,
        ["unknown method /grpc.Health/Check"],
    ),
    "a path that is no method is INVALID_ARGUMENT": (
        {
            "body": grpc_message(UNKNOWN_JOB),
            "headers": request_headers("Status/extra"),
        },
        StatusCode.INVALID_ARGUMENT,
        ["malformed gRPC request headers"],
    ),
    "a malformed grpc-timeout is INVALID_ARGUMENT": (
        {
            "body": grpc_message(UNKNOWN_JOB),
            "headers": request_headers(extra=[("grpc-timeout", "soonS")]),
        },
        StatusCode.INVALID_ARGUMENT,
        ["malformed gRPC request headers"],
    ),
}


@pytest.mark.parametrize("case", list(STATUS_CASES))
async def test_a_malformed_request_gets_a_precise_status_and_the_connection_serves_on(
    daemon: Daemon, case: str
) -> None:
    request, code, words = STATUS_CASES[case]
    async with connect(daemon) as client:
        answer = await client.answer(await client.request(**request))  # type: ignore[arg-type]
        assert_status(answer, code, *words)
        await assert_connection_still_serves(client)


async def test_a_wrong_content_type_is_http_415_and_invalid_argument(daemon: Daemon) -> None:
    async with connect(daemon) as client:
        headers = request_headers(content_type="text/plain")
        answer = await client.answer(await client.request(b"hello", headers=headers))
        assert answer.headers[":status"] == "415"
        assert_status(answer, StatusCode.INVALID_ARGUMENT, "content-type 'text/plain' is not gRPC")
        await assert_connection_still_serves(client)


async def test_an_oversized_message_is_refused_from_its_length_prefix(daemon: Daemon) -> None:
    async with connect(daemon) as client:
        # Only the length prefix and a few bytes: the body never comes.
        prefix = grpc_message(b"x" * 100, length=MAX_REQUEST + 1)
        stream_id = await client.request(prefix, end_stream=False)
        answer = await client.answer(stream_id)
        assert_status(
            answer,
            StatusCode.RESOURCE_EXHAUSTED,
            f"{MAX_REQUEST + 1} bytes; at most {MAX_REQUEST} bytes",
            "--max-request-size",
        )
        await assert_connection_still_serves(client)


async def test_a_client_still_sending_after_its_answer_is_told_to_stop(daemon: Daemon) -> None:
    async with connect(daemon) as client:
        stream_id = await client.request(grpc_message(b"\xff\xff"), end_stream=False)
        with trio.fail_after(10):
            while client.answers[stream_id].reset_code is None:
                await client.receive_some()
        answer = client.answers[stream_id]
        assert (answer.ended, answer.reset_code) == (True, 0)  # trailers, then RST_STREAM NO_ERROR
        await assert_connection_still_serves(client)


async def test_garbage_instead_of_the_http2_preface_closes_the_connection(
    daemon: Daemon,
) -> None:
    async with connect(daemon, preface=False) as client:
        await client.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with trio.fail_after(10):
            await client.until_closed()


async def test_the_daemon_advertises_its_stream_cap(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    capped = await start_daemon(
        nursery, pki, tmp_path, transport=TransportConfig(max_streams_per_connection=3)
    )
    async with connect(capped) as client:
        assert client.h2.remote_settings.max_concurrent_streams == 3


async def test_a_client_opening_more_streams_than_the_cap_loses_the_connection(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    capped = await start_daemon(
        nursery, pki, tmp_path, transport=TransportConfig(max_streams_per_connection=3)
    )
    async with connect(capped, obey_limits=False) as client:
        for _ in range(4):  # headers only: each request stays open, waiting for its message
            await client.request(b"", end_stream=False)
        with trio.fail_after(10):
            await client.until_closed()
        assert client.terminated is not None
    await assert_serves_a_normal_client(capped)


async def test_log_streams_that_are_never_read_block_only_their_connection(
    daemon: Daemon,
) -> None:
    chatty = pb.JobStartRequest(name="sh", args=["-c", "head -c 1000000 /dev/zero; exec sleep 300"])
    async with daemon.client() as rund:
        job_id = await rund.start(chatty)
        received = 0
        async for chunk in rund.log(job_id):  # all of it recorded: its descriptors settle
            received += len(chunk.stdout)
            if received == 1_000_000:
                break
    await daemon.running.server.wait_until_idle()
    log_request = grpc_message(pb.JobIdentifier(ulid=job_id).SerializeToString())
    async with connect(daemon) as client:
        for _ in range(20):
            await client.request(log_request, headers=request_headers("Log"))
        await daemon.running.server.wait_for_requests(20)
        # The connection's flow-control window is spent and never replenished.
        with trio.fail_after(10):
            while client.h2.inbound_flow_control_window > 0:
                await client.receive_some()
        async with daemon.client() as rund:
            assert (await rund.status(job_id)).state == pb.JOB_STATE_RUNNING
    async with daemon.client() as rund:
        await rund.stop(job_id)

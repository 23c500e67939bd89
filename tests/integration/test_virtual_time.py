"""The daemon and its client in one process, over trio memory streams with
real mutual TLS on them, fake processes (tests/fakes.py) and trio's autojump
clock: every timing here is asserted at its exact virtual instant, and the
whole file runs in seconds of real time. The real-socket, real-process tests
beside it are the outer ring."""

from __future__ import annotations

import math
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from rund_trio.rpc import Channel, GrpcServer, TransportConfig, open_channel
from rund_trio.server.app import RunningDaemon, ServeConfig, serve_on
from tests.conftest import Pki
from tests.fakes import FakeProcess, FakeSpawner, commit_inline

HANDSHAKE_TIMEOUT = 3.0
LINGER = 0.5


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose ``connect`` hands the server half of a new memory
    stream pair to ``accept`` (as trio's own tests do)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    def connect(self, *, lockstep: bool = False) -> trio.abc.Stream:
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        self._send.send_nowait(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()


class CountingStream(trio.abc.Stream):
    """A stream that counts the bytes received through it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.received = 0

    async def send_all(self, data: Any) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


@dataclass
class MemoryDaemon:
    running: RunningDaemon
    listener: MemoryListener
    spawner: FakeSpawner
    pki: Pki

    @property
    def server(self) -> GrpcServer:
        return self.running.server

    def client(self, stream: trio.abc.Stream | None = None) -> Any:
        return RundClient.connect(
            "localhost:1",
            self.pki.client_tls("alice").client_context(),
            transport=stream or self.listener.connect(),
        )

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        context = self.pki.client_tls("alice").client_context()
        async with open_channel(
            "localhost", 1, context, transport=self.listener.connect()
        ) as channel:
            yield channel

    def process(self, index: int = -1) -> FakeProcess:
        return self.spawner.processes[index]


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner(ignores_sigterm=True)


@pytest.fixture
async def daemon(  # the tests take autojump_clock: pytest-trio runs them on it
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, spawner: FakeSpawner
) -> MemoryDaemon:
    config = ServeConfig(
        tls=pki.server_tls(),
        state_dir=tmp_path / "state",
        cgroups=None,
        isolation=IsolationPolicy(namespaces=False, default_profile=Profile.HOST),
        output_linger=LINGER,
        transport=TransportConfig(handshake_timeout=HANDSHAKE_TIMEOUT),
    )
    listener = MemoryListener()
    running = await nursery.start(
        partial(
            serve_on,
            [listener],
            config,
            ssl_context=config.tls.server_context(),
            spawner=spawner,
            store_offload=commit_inline,
        )
    )
    return MemoryDaemon(running, listener, spawner, pki)


START = pb.JobStartRequest(name="worker")


async def test_a_silent_peer_is_dropped_at_exactly_the_handshake_timeout(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,
) -> None:
    stream = daemon.listener.connect()
    connected_at = trio.current_time()
    assert await stream.receive_some() == b""  # the daemon hung up
    assert trio.current_time() == connected_at + HANDSHAKE_TIMEOUT
    await daemon.server.wait_until_idle()


async def test_a_grpc_timeout_ends_a_waiting_log_at_exactly_its_deadline(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,
) -> None:
    async with daemon.client() as rund, daemon.channel() as channel:
        job_id = await rund.start(START)
        asked_at = trio.current_time()
        log = channel.unary_stream(
            "rund.JobController",
            "Log",
            pb.JobIdentifier(ulid=job_id),
            pb.JobLog.FromString,
            timeout=0.5,
        )
        with pytest.raises(RpcError) as error:
            async for _ in log:
                pass
        assert error.value.code == "DEADLINE_EXCEEDED"
        assert trio.current_time() == asked_at + 0.5


@pytest.mark.parametrize("timeout", [0.0, 1e-7])
async def test_a_grpc_timeout_of_zero_or_under_a_microsecond_is_already_past(
    autojump_clock: MockClock, daemon: MemoryDaemon, timeout: float
) -> None:
    async with daemon.client() as rund, daemon.channel() as channel:
        job_id = await rund.start(START)
        asked_at = trio.current_time()
        with trio.fail_after(60), pytest.raises(RpcError) as error:  # no deadline: hangs
            async for _ in channel.unary_stream(
                "rund.JobController",
                "Log",
                pb.JobIdentifier(ulid=job_id),
                pb.JobLog.FromString,
                timeout=timeout,
            ):
                pass
        assert error.value.code == "DEADLINE_EXCEEDED"
        assert trio.current_time() == pytest.approx(asked_at + timeout, abs=1e-12)


async def test_status_with_a_grpc_timeout_of_zero_is_deadline_exceeded_and_without_one_answers(
    autojump_clock: MockClock, daemon: MemoryDaemon
) -> None:
    async with daemon.client() as rund, daemon.channel() as channel:
        job_id = await rund.start(START)
        request = pb.JobIdentifier(ulid=job_id)
        with pytest.raises(RpcError) as error:
            await channel.unary_unary(
                "rund.JobController", "Status", request, pb.JobStatus.FromString, timeout=0.0
            )
        assert error.value.code == "DEADLINE_EXCEEDED"
        status = await channel.unary_unary(
            "rund.JobController", "Status", request, pb.JobStatus.FromString, timeout=1.0
        )
        assert status.state == pb.JOB_STATE_RUNNING
        with pytest.raises(RpcError) as error:
            await channel.unary_unary(
                "rund.JobController",
                "Status",
                pb.JobIdentifier(ulid="01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                pb.JobStatus.FromString,
            )
        assert error.value.code == "NOT_FOUND"


async def test_stop_answers_when_the_grace_period_ends_with_sigkill(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START)
        asked_at = trio.current_time()
        status = await rund.stop(job_id, grace=timedelta(seconds=5))
        assert trio.current_time() == asked_at + 5.0
    assert status.stopped
    assert daemon.process().signals == [
        (signal.SIGTERM, asked_at),
        (signal.SIGKILL, asked_at + 5.0),
    ]


async def test_log_follows_the_output_and_ends_when_the_job_ends(
    autojump_clock: MockClock, daemon: MemoryDaemon
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START)
        process = daemon.process()
        received: list[tuple[bytes, float]] = []

        async def job() -> None:
            await process.write_stdout(b"first ")
            await trio.sleep(2)
            await process.write_stdout(b"second")
            await trio.sleep(1)
            process.exit(0)
            await process.close_output()

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            async for chunk in rund.log(job_id):
                received.append((chunk.stdout, trio.current_time() - started))
        ended = trio.current_time() - started
    assert received == [(b"first ", 0.0), (b"second", 2.0)]
    assert ended == 3.0


async def test_output_left_open_after_exit_ends_the_log_after_the_linger(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START)
        process = daemon.process()
        await process.write_stdout(b"before exit")
        exited_at = trio.current_time()
        process.exit(0)  # an escaped descendant still holds the pipes open
        output = b"".join([chunk.stdout async for chunk in rund.log(job_id)])
        assert trio.current_time() == exited_at + LINGER
    assert output == b"before exit"


async def test_a_reset_log_stream_ends_its_request_at_once_and_the_connection_serves_on(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START)
        await daemon.process().write_stdout(b"x")
        log = rund.log(job_id)
        assert (await log.__anext__()).stdout == b"x"
        reset_at = trio.current_time()
        await log.aclose()  # RST_STREAM
        while daemon.server.requests:
            await daemon.server.wait_until_requests_change()
        assert trio.current_time() == reset_at
        assert (await rund.status(job_id)).state == pb.JOB_STATE_RUNNING
        assert daemon.server.connections == 1


async def test_an_unread_log_stays_within_its_flow_control_window(
    autojump_clock: MockClock, daemon: MemoryDaemon
) -> None:
    """A subscriber that stops reading: over a stream that buffers nothing,
    the daemon sends no more than the call's flow-control window (twice the
    largest message) and one message, however much the job writes; then,
    read, every byte arrives."""
    window = 2 * 4 * 1024 * 1024
    chunk = bytes(64 * 1024)
    written = 32 * 1024 * 1024
    wire = CountingStream(daemon.listener.connect(lockstep=True))
    async with daemon.client(wire) as rund:
        job_id = await rund.start(START)
        process = daemon.process()
        log = rund.log(job_id)
        await process.write_stdout(chunk)
        first = await log.__anext__()
        received = len(first.stdout)
        for _ in range(written // len(chunk) - 1):
            await process.write_stdout(chunk)
        await trio.sleep(60)  # the daemon has all the time it wants
        assert wire.received <= window + 1024 * 1024 + 256 * 1024  # + TLS and framing
        process.exit(0)
        await process.close_output()
        async for piece in log:
            received += len(piece.stdout)
    assert received == written

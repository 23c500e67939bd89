"""The server layer with the client layer, in one process over trio memory
streams: all four cardinalities, several services on one server, and what
the observer is told."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from google.protobuf.wrappers_pb2 import StringValue
from trio.testing import MockClock

from rund_trio.errors import ConnectionFailed, InvalidRequest, RpcError
from rund_trio.rpc import (
    MAX_MESSAGE_CHARS,
    Cardinality,
    Channel,
    GrpcServer,
    RPCSignature,
    Service,
    TransportConfig,
    current_peer,
    nonblocking_unary,
    open_channel,
    open_stream_channel,
)
from rund_trio.server.calls import CallRecord, HandshakeOutcome
from rund_trio.tls.identity import Identity
from tests.conftest import Pki
from tests.raw_grpc import FrameReader, raw_call


def text(value: str) -> StringValue:
    return StringValue(value=value)


def echo_service() -> Service:
    """One method of each cardinality."""
    service = Service("test.Echo")

    async def upper(message: StringValue) -> StringValue:
        if message.value == "fail":
            raise InvalidRequest("asked to fail")
        return text(message.value.upper())

    async def letters(message: StringValue) -> AsyncIterator[StringValue]:
        for letter in message.value:
            yield text(letter)

    async def join(messages: AsyncIterator[StringValue]) -> StringValue:
        return text("+".join([message.value async for message in messages]))

    async def reverse_each(messages: AsyncIterator[StringValue]) -> AsyncIterator[StringValue]:
        async for message in messages:
            yield text(message.value[::-1])

    for name, function, cardinality in [
        ("Upper", upper, Cardinality.UNARY_UNARY),
        ("Letters", letters, Cardinality.UNARY_STREAM),
        ("Join", join, Cardinality.STREAM_UNARY),
        ("ReverseEach", reverse_each, Cardinality.STREAM_STREAM),
    ]:
        service.add_method(name, function, RPCSignature(cardinality, StringValue, StringValue))
    return service


def peer_service() -> Service:
    service = Service("test.Peer")

    async def who(message: StringValue) -> StringValue:
        return text(current_peer().address)

    service.add_method("Who", who, RPCSignature(Cardinality.UNARY_UNARY, StringValue, StringValue))
    return service


@dataclass
class AtOnce:
    """A non-blocking unary handler that notes which task answered it."""

    tasks: list[str] = field(default_factory=list)
    clock: MockClock | None = None

    def shout(self, message: StringValue) -> StringValue:
        self.tasks.append(trio.lowlevel.current_task().name)
        if message.value == "fail":
            raise InvalidRequest("asked to fail")
        if message.value == "slow" and self.clock is not None:
            self.clock.jump(2.0)  # a handler that took 2 s of the call's deadline
        return text(message.value.upper() + "!")

    def service(self) -> Service:
        service = Service("test.AtOnce")
        signature = RPCSignature(Cardinality.UNARY_UNARY, StringValue, StringValue)
        nonblocking_unary(service, "Shout", self.shout, signature)
        return service


@dataclass
class Recorder:
    """An observer that keeps what it is told."""

    seen: list[tuple[str, object]] = field(default_factory=list)

    def connection_opened(self, peer: str) -> None:
        self.seen.append(("opened", peer))

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None:
        self.seen.append(("handshake", outcome))

    def connection_closed(self, peer: str) -> None:
        self.seen.append(("closed", peer))

    def call_finished(self, record: CallRecord) -> None:
        self.seen.append(("call", record))

    @property
    def calls(self) -> list[CallRecord]:
        return [record for kind, record in self.seen if isinstance(record, CallRecord)]


@asynccontextmanager
async def connected(
    recorder: Recorder | None = None, at_once: AtOnce | None = None
) -> AsyncIterator[tuple[Channel, GrpcServer]]:
    services = [echo_service(), peer_service(), (at_once or AtOnce()).service()]
    server = GrpcServer(services, None, observer=recorder)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream, "memory:1")
        async with open_stream_channel(client_stream) as channel:
            yield channel, server
        with trio.fail_after(5):
            await server.wait_until_idle()


def decode(data: bytes) -> str:
    return StringValue.FromString(data).value


async def test_a_unary_call_gets_one_answer() -> None:
    async with connected() as (channel, _):
        assert await channel.unary_unary("test.Echo", "Upper", text("hi"), decode) == "HI"


async def test_a_server_streaming_call_gets_every_answer_in_order() -> None:
    async with connected() as (channel, _):
        letters = [
            letter
            async for letter in channel.unary_stream("test.Echo", "Letters", text("abc"), decode)
        ]
        assert letters == ["a", "b", "c"]


async def test_a_client_streaming_call_reads_every_request_message() -> None:
    async with connected() as (channel, _):
        call = channel.start("test.Echo", "Join", decode)
        for part in ("x", "y", "z"):
            await call.send(text(part))
        call.end()
        assert await call.receive() == "x+y+z"
        assert await call.receive() is None


async def test_a_bidirectional_call_answers_each_message_as_it_comes() -> None:
    async with connected() as (channel, _):
        call = channel.start("test.Echo", "ReverseEach", decode)
        await call.send(text("ab"))
        assert await call.receive() == "ba"  # before the request ended
        await call.send(text("cd"))
        assert await call.receive() == "dc"
        call.end()
        assert await call.receive() is None


async def test_several_services_are_served_on_one_connection() -> None:
    async with connected() as (channel, _):
        assert await channel.unary_unary("test.Peer", "Who", text(""), decode) == "memory:1"
        assert await channel.unary_unary("test.Echo", "Upper", text("a"), decode) == "A"


async def test_an_unknown_method_is_unimplemented() -> None:
    async with connected() as (channel, _):
        with pytest.raises(RpcError) as error:
            await channel.unary_unary("test.Echo", "Lower", text("a"), decode)
    assert (error.value.code, error.value.message) == (
        "UNIMPLEMENTED",
        "unknown method /test.Echo/Lower",
    )


async def test_the_observer_sees_the_connection_and_each_call_with_its_status() -> None:
    recorder = Recorder()
    async with connected(recorder) as (channel, _):
        await channel.unary_unary("test.Echo", "Upper", text("hi"), decode)
        with pytest.raises(RpcError):
            await channel.unary_unary("test.Echo", "Upper", text("fail"), decode)
    assert recorder.seen[0] == ("opened", "memory:1")
    assert recorder.seen[-1] == ("closed", "memory:1")
    ok, failed = recorder.calls
    assert (ok.method, ok.code, ok.message, ok.request) == (
        "/test.Echo/Upper",
        "OK",
        "",
        text("hi"),
    )
    assert (failed.code, failed.message, failed.request) == (
        "INVALID_ARGUMENT",
        "asked to fail",
        text("fail"),
    )
    assert ok.peer == "memory:1" and ok.duration >= 0


async def test_the_observer_sees_a_cancelled_call_as_cancelled() -> None:
    recorder = Recorder()
    async with connected(recorder) as (channel, server):
        call = channel.start("test.Echo", "ReverseEach", decode)
        await call.send(text("ab"))
        assert await call.receive() == "ba"
        call.abandon()  # RST_STREAM
        with trio.fail_after(5):
            while server.requests:
                await server.wait_until_requests_change()
    [record] = recorder.calls
    assert (record.method, record.code) == ("/test.Echo/ReverseEach", "CANCELLED")


async def serve_tls(
    nursery: trio.Nursery, pki: Pki, recorder: Recorder, handshake_timeout: float = 10.0
) -> trio.abc.Stream:
    """A TLS server on one memory connection; the client's end of it."""
    server = GrpcServer(
        [echo_service()],
        pki.server_tls().server_context(),
        TransportConfig(handshake_timeout=handshake_timeout),
        observer=recorder,
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.serve_connection, server_stream, "memory:2")
    return client_stream


async def test_the_observer_hears_of_a_completed_handshake(nursery: trio.Nursery, pki: Pki) -> None:
    recorder = Recorder()
    stream = await serve_tls(nursery, pki, recorder)
    context = pki.client_tls("alice").client_context()
    async with open_channel("localhost", 1, context, transport=stream) as channel:
        assert await channel.unary_unary("test.Echo", "Upper", text("a"), decode) == "A"
    [record] = recorder.calls
    assert record.identity.shares_san_with(Identity.of("DNS:alice"))
    assert len(record.certificate_sha256) == 64
    assert recorder.seen[:2] == [("opened", "memory:2"), ("handshake", HandshakeOutcome.OK)]


async def test_the_observer_hears_of_a_handshake_timed_out_at_exactly_its_timeout(
    autojump_clock: MockClock, nursery: trio.Nursery, pki: Pki
) -> None:
    recorder = Recorder()
    stream = await serve_tls(nursery, pki, recorder, handshake_timeout=2.5)
    began = trio.current_time()
    assert await stream.receive_some() == b""
    assert trio.current_time() == began + 2.5
    await trio.testing.wait_all_tasks_blocked()
    assert recorder.seen == [
        ("opened", "memory:2"),
        ("handshake", HandshakeOutcome.TIMED_OUT),
        ("closed", "memory:2"),
    ]


async def test_the_observer_hears_of_a_refused_handshake(nursery: trio.Nursery, pki: Pki) -> None:
    recorder = Recorder()
    stream = await serve_tls(nursery, pki, recorder)
    without_certificate = ssl.create_default_context(cafile=str(pki.files.ca.cert))
    without_certificate.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ConnectionFailed):
        async with open_channel("localhost", 1, without_certificate, transport=stream) as channel:
            await channel.unary_unary("test.Echo", "Upper", text("a"), decode)
    await trio.testing.wait_all_tasks_blocked()
    assert ("handshake", HandshakeOutcome.REFUSED) in recorder.seen


async def test_a_status_quoting_a_huge_method_name_is_bounded() -> None:
    async with connected() as (channel, _):
        with pytest.raises(RpcError) as error:
            await channel.unary_unary("test.Echo", "M" * 5000, text("a"), decode)
    assert error.value.code == "UNIMPLEMENTED"
    assert len(error.value.message) <= MAX_MESSAGE_CHARS
    assert error.value.message.startswith("unknown method /test.Echo/MMM")


# ------------------------------------------------- the non-blocking unary path


async def test_a_whole_nonblocking_unary_request_is_answered_without_a_task_of_its_own() -> None:
    at_once, recorder = AtOnce(), Recorder()
    async with connected(recorder, at_once) as (channel, _):
        for word in ("hi", "ho"):
            assert await channel.unary_unary("test.AtOnce", "Shout", text(word), decode) == (
                word.upper() + "!"
            )
    assert not any("_run_request" in task for task in at_once.tasks), at_once.tasks
    first, second = recorder.calls
    assert (first.method, first.code, first.message, first.request) == (
        "/test.AtOnce/Shout",
        "OK",
        "",
        text("hi"),
    )
    assert second.request == text("ho") and second.duration >= 0


async def test_a_nonblocking_handler_that_raises_ends_the_call_with_its_status() -> None:
    recorder = Recorder()
    async with connected(recorder) as (channel, _):
        with pytest.raises(RpcError) as error:
            await channel.unary_unary("test.AtOnce", "Shout", text("fail"), decode)
        # the connection serves on
        assert await channel.unary_unary("test.AtOnce", "Shout", text("a"), decode) == "A!"
    assert (error.value.code, error.value.message) == ("INVALID_ARGUMENT", "asked to fail")
    assert [(call.code, call.message) for call in recorder.calls] == [
        ("INVALID_ARGUMENT", "asked to fail"),
        ("OK", ""),
    ]


async def test_a_nonblocking_call_with_a_deadline_already_past_is_not_answered(
    autojump_clock: MockClock,
) -> None:
    at_once, recorder = AtOnce(), Recorder()
    async with connected(recorder, at_once) as (channel, _):
        with pytest.raises(RpcError) as error:
            await channel.unary_unary("test.AtOnce", "Shout", text("a"), decode, timeout=0.0)
    assert error.value.code == "DEADLINE_EXCEEDED"
    assert at_once.tasks == []  # the handler never ran
    assert [call.code for call in recorder.calls] == ["DEADLINE_EXCEEDED"]


async def test_a_nonblocking_handler_that_outlasts_the_deadline_ends_the_call_with_it(
    autojump_clock: MockClock,
) -> None:
    at_once = AtOnce(clock=autojump_clock)
    async with connected(None, at_once) as (channel, _):
        with pytest.raises(RpcError) as error:
            await channel.unary_unary("test.AtOnce", "Shout", text("slow"), decode, timeout=1.0)
        assert error.value.code == "DEADLINE_EXCEEDED"
        # within its deadline, the same call is answered
        assert (
            await channel.unary_unary("test.AtOnce", "Shout", text("slow"), decode, timeout=3.0)
            == "SLOW!"
        )


async def test_a_nonblocking_request_whose_message_comes_later_is_answered_by_a_task(
    autojump_clock: MockClock,
) -> None:
    at_once, recorder = AtOnce(), Recorder()
    async with connected(recorder, at_once) as (channel, server):
        call = channel.start("test.AtOnce", "Shout", decode, timeout=5.0)  # headers alone
        await server.wait_for_requests(1)
        await trio.sleep(1.0)
        await call.send(text("late"))
        call.end()
        assert await call.receive() == "LATE!"
        assert await call.receive() is None
    [task] = at_once.tasks
    assert "_run_request" in task
    [record] = recorder.calls
    assert (record.code, record.request, record.duration) == ("OK", text("late"), 1.0)


async def test_an_incomplete_nonblocking_request_still_has_its_deadline(
    autojump_clock: MockClock,
) -> None:
    async with connected() as (channel, _):
        call = channel.start("test.AtOnce", "Shout", decode, timeout=0.5)  # and no message
        asked_at = trio.current_time()
        with pytest.raises(RpcError) as error:
            await call.receive()
        assert error.value.code == "DEADLINE_EXCEEDED"
        assert trio.current_time() == asked_at + 0.5


async def test_a_nonblocking_request_without_a_message_is_invalid() -> None:
    async with connected() as (channel, _):
        call = channel.start("test.AtOnce", "Shout", decode, wake=False)
        call.end()  # headers and end in one write
        with pytest.raises(RpcError) as error:
            await call.receive()
    assert error.value.code == "INVALID_ARGUMENT"


async def test_a_nonblocking_request_reset_with_its_headers_is_recorded_as_cancelled() -> None:
    at_once, recorder = AtOnce(), Recorder()
    async with connected(recorder, at_once) as (channel, server):
        call = channel.start("test.AtOnce", "Shout", decode, wake=False)
        call.abandon()  # RST_STREAM, in the same write as the headers
        # the connection serves on, and has forgotten the reset call
        assert await channel.unary_unary("test.AtOnce", "Shout", text("b"), decode) == "B!"
        assert server.requests == 0
    assert at_once.tasks and len(at_once.tasks) == 1
    cancelled, ok = recorder.calls
    assert (cancelled.method, cancelled.code, cancelled.request) == (
        "/test.AtOnce/Shout",
        "CANCELLED",
        None,
    )
    assert ok.code == "OK"


async def test_a_nonblocking_request_reset_while_its_task_waits_is_recorded_as_cancelled() -> None:
    recorder = Recorder()
    async with connected(recorder) as (channel, server):
        call = channel.start("test.AtOnce", "Shout", decode)  # headers alone: a task waits
        await server.wait_for_requests(1)
        call.abandon()  # RST_STREAM
        with trio.fail_after(5):
            while server.requests:
                await server.wait_until_requests_change()
    [record] = recorder.calls
    assert (record.method, record.code) == ("/test.AtOnce/Shout", "CANCELLED")


def test_only_a_unary_method_can_be_registered_as_nonblocking() -> None:
    signature = RPCSignature(Cardinality.UNARY_STREAM, StringValue, StringValue)
    with pytest.raises(ValueError, match="only a unary-unary method"):
        nonblocking_unary(Service("test.X"), "Many", lambda message: message, signature)


# ------------------------------------------------------------------ shutdown


PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
"""An HTTP/2 PING frame, as a client may send one any time."""


def holding_service() -> Service:
    service = Service("test.Hold")

    async def hold(message: StringValue) -> AsyncIterator[StringValue]:
        yield text("first")
        await trio.sleep_forever()

    service.add_method(
        "Hold", hold, RPCSignature(Cardinality.UNARY_STREAM, StringValue, StringValue)
    )
    return service


async def test_shutting_down_says_goodbye_after_what_was_sent_and_closes_only_once_the_peer_has(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    server = GrpcServer([holding_service()], None, observer=recorder)
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(server.serve_on, listener)
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    _, request = raw_call("Hold", text("x"), service="test.Hold")
    await client.send_all(request)
    frames = FrameReader()
    seen: list[str] = []
    while "DATA" not in seen:
        seen += frames.feed(await client.receive_some())
    await server.wait_for_requests(1)

    done = trio.Event()

    async def shut_down() -> None:
        await server.shut_down(timeout=30)
        done.set()

    nursery.start_soon(shut_down)
    seen = []
    while "RST_STREAM:8" not in seen:
        seen += frames.feed(await client.receive_some())
    # goodbye (NO_ERROR), then the open call ends (CANCEL)
    assert [name for name in seen if name != "WINDOW_UPDATE"] == ["GOAWAY:0", "RST_STREAM:8"]
    # What the client sends after the goodbye is read: closing with it unread
    # would reset the connection, and a client could lose what it had not read.
    await client.send_all(PING)
    assert not done.is_set() and server.connections == 1
    await client.send_eof()
    rest = b""
    while data := await client.receive_some():  # no ECONNRESET: a clean end
        rest += data
    with trio.fail_after(5):
        await done.wait()
    assert server.connections == 0
    [record] = recorder.calls
    assert (record.method, record.code, record.message) == (
        "/test.Hold/Hold",
        "CANCELLED",
        "the daemon is shutting down",
    )
    await client.aclose()

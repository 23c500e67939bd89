"""The server layer with the client layer, in one process over trio memory
streams: all four cardinalities, several services on one server, and what
the observer is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from google.protobuf.wrappers_pb2 import StringValue

from rund_trio.errors import InvalidRequest, RpcError
from rund_trio.rpc import (
    Cardinality,
    Channel,
    GrpcServer,
    RPCSignature,
    Service,
    current_peer,
    open_stream_channel,
)
from rund_trio.server.calls import CallRecord, HandshakeOutcome


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
    recorder: Recorder | None = None,
) -> AsyncIterator[tuple[Channel, GrpcServer]]:
    server = GrpcServer([echo_service(), peer_service()], None, observer=recorder)
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

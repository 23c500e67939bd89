"""What the client side of the gRPC layer tells about a failed connection
(``TransportFailed``): facts for the client to explain, not explanations."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from rund_trio.errors import RpcError
from rund_trio.rpc import GrpcServer, Stage, TransportFailed, open_channel, open_stream_channel
from tests.conftest import Pki
from tests.rpc.test_server import Recorder, decode, echo_service, serve_tls, text


async def test_a_tls_server_without_http2_is_a_protocol_failure_naming_no_alpn(
    nursery: trio.Nursery, pki: Pki
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.files.server.cert, pki.files.server.key)  # no ALPN offered
    client_stream, server_stream = trio.testing.memory_stream_pair()
    tls_server = trio.SSLStream(server_stream, context, server_side=True)
    nursery.start_soon(tls_server.do_handshake)
    client_context = pki.client_tls("alice").client_context()
    with pytest.raises(TransportFailed) as caught:
        async with open_channel("localhost", 1, client_context, transport=client_stream):
            pass
    assert (caught.value.stage, caught.value.alpn) == (Stage.PROTOCOL, None)


async def test_a_refused_client_certificate_ends_the_connection_before_the_peer_answered(
    nursery: trio.Nursery, pki: Pki
) -> None:
    stream = await serve_tls(nursery, pki, Recorder())
    without_certificate = ssl.create_default_context(cafile=str(pki.files.ca.cert))
    without_certificate.minimum_version = ssl.TLSVersion.TLSv1_3
    without_certificate.set_alpn_protocols(["h2"])
    with pytest.raises(TransportFailed) as caught:
        async with open_channel("localhost", 1, without_certificate, transport=stream) as channel:
            await channel.unary_unary("test.Echo", "Upper", text("a"), decode)
    assert caught.value.stage is Stage.CONNECTION
    assert not caught.value.peer_answered


async def test_a_connection_the_server_closes_after_answering_says_the_peer_answered() -> None:
    server = GrpcServer([echo_service()], None)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        serving = trio.CancelScope()

        async def serve() -> None:
            with serving:
                await server.serve_connection(server_stream, "memory:3")
            await server_stream.aclose()

        nursery.start_soon(serve)
        async with open_stream_channel(client_stream) as channel:
            assert await channel.unary_unary("test.Echo", "Upper", text("a"), decode) == "A"
            serving.cancel()
            with pytest.raises(TransportFailed) as caught:
                await channel.unary_unary("test.Echo", "Upper", text("b"), decode)
    assert caught.value.stage is Stage.CONNECTION
    assert caught.value.peer_answered


async def test_sending_on_an_answered_call_is_still_a_checkpoint() -> None:
    server = GrpcServer([echo_service()], None)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream, "memory:4")
        async with open_stream_channel(client_stream) as channel:
            call = channel.start("test.Echo", "NoSuchMethod", decode)
            await call.send(text("x"))
            with pytest.raises(RpcError):  # UNIMPLEMENTED: answered at once
                await call.receive()
            with trio.testing.assert_checkpoints():
                await call.send(text("y"))  # a sender looping here can be cancelled
        nursery.cancel_scope.cancel()

"""The server's TLS stream (``rpc._server_tls.ServerTls``): what
``trio.SSLStream`` did, with every record at hand decrypted per read."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rund_trio.rpc._server_tls import ServerTls
from tests.conftest import Pki

RECORD = 16 * 1024


async def connected(pki: Pki) -> tuple[trio.SSLStream[trio.abc.Stream], ServerTls]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = ServerTls(server_stream, pki.server_tls().server_context())
    client = trio.SSLStream(
        client_stream, pki.client_tls("alice").client_context(), server_hostname="localhost"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return client, server


async def test_a_read_takes_every_record_already_received(pki: Pki) -> None:
    client, server = await connected(pki)
    await client.send_all(b"x" * (8 * RECORD))  # eight records, all delivered
    assert len(await server.receive_some()) == 8 * RECORD


async def test_a_read_takes_at_most_max_bytes(pki: Pki) -> None:
    client, server = await connected(pki)
    await client.send_all(b"abcdef")
    assert await server.receive_some(4) == b"abcd"
    assert await server.receive_some() == b"ef"


async def test_bytes_go_both_ways_and_the_peer_certificate_is_known(pki: Pki) -> None:
    client, server = await connected(pki)
    await server.send_all(b"from the server")
    assert await client.receive_some() == b"from the server"
    assert server.getpeercert(binary_form=True)


async def test_the_clients_close_is_the_end_of_the_stream(pki: Pki) -> None:
    client, server = await connected(pki)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        assert await server.receive_some() == b""


async def test_a_client_refused_in_the_handshake_is_a_broken_resource(pki: Pki) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = ServerTls(server_stream, pki.server_tls().server_context())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_stream.send_all, b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(trio.BrokenResourceError) as caught:
            await server.do_handshake()
    assert caught.value.__cause__ is not None


async def test_a_client_that_sends_first_over_a_stream_that_buffers_nothing_is_served(
    pki: Pki,
) -> None:
    """The session tickets TLS 1.3 queues at the end of the handshake go out
    with the server's first write: flushed at once, they would wait for a
    client that sends its request before it reads, and neither would move."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    server = ServerTls(server_stream, pki.server_tls().server_context())
    client = trio.SSLStream(
        client_stream, pki.client_tls("alice").client_context(), server_hostname="localhost"
    )
    with trio.fail_after(10):  # a deadlock, not a slow machine, if it trips
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"the first request")
            assert await server.receive_some() == b"the first request"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"its answer")
            assert await client.receive_some() == b"its answer"


async def test_sends_from_several_tasks_go_out_whole_in_the_order_they_began(pki: Pki) -> None:
    client, server = await connected(pki)
    pieces = [bytes([65 + n]) * 40_000 for n in range(4)]
    received = bytearray()

    async def read_all() -> None:
        while len(received) < sum(map(len, pieces)):
            received.extend(await client.receive_some())

    async with trio.open_nursery() as nursery:
        for piece in pieces:  # each writes into TLS and queues to send before the next
            nursery.start_soon(server.send_all, piece)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read_all)
    assert bytes(received) == b"".join(pieces)


async def test_a_send_cancelled_before_it_goes_out_goes_out_with_the_next(pki: Pki) -> None:
    client, server = await connected(pki)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.send_all(b"one ")
    await server.send_all(b"two")
    received = b""
    while len(received) < len(b"one two"):
        received += await client.receive_some()
    assert received == b"one two"


async def test_a_send_of_nothing_is_still_a_checkpoint(pki: Pki) -> None:
    _, server = await connected(pki)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.send_all(b"")

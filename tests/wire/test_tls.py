"""The TLS stream hands over every record it already holds in one receive."""

from __future__ import annotations

import ssl

import anyio
import anyio.abc
import trustme
from anyio.streams.tls import TLSStream

from rund_trio.wire.tls import RECORD_SIZE, TlsStream


async def _connected_pair(stream_class: type[TLSStream]) -> tuple[TLSStream, TLSStream]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        accepted: list[TLSStream] = []

        async def accept() -> None:
            tcp = await listener.listeners[0].accept()
            accepted.append(
                await TLSStream.wrap(
                    tcp, server_side=True, ssl_context=server_context, standard_compatible=False
                )
            )

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(accept)
            tcp = await anyio.connect_tcp("127.0.0.1", port)
            client = await stream_class.wrap(
                tcp, hostname="localhost", ssl_context=client_context, standard_compatible=False
            )
    return accepted[0], client


async def test_one_receive_returns_every_record_already_received() -> None:
    server, client = await _connected_pair(TlsStream)
    # Four records: more than anyio's 64 KiB socket read, all in the client's
    # socket buffer once send() returns.
    payload = b"r" * (4 * RECORD_SIZE)
    await server.send(payload)
    assert await client.receive(1024 * 1024) == payload
    await server.aclose()
    await client.aclose()


async def test_a_receive_never_returns_more_than_asked() -> None:
    server, client = await _connected_pair(TlsStream)
    await server.send(b"abcdef")
    assert await client.receive(4) == b"abcd"
    assert await client.receive(4) == b"ef"
    await server.aclose()
    await client.aclose()

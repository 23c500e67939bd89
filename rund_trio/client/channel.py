"""purerpc's client channel, adapted to close its connection.

purerpc 0.8's ``secure_channel`` never closes the TCP connection it opens (its
socket wrapper has no ``aclose``): the daemon only learns that a client left
when the client process exits. This channel owns the connection and closes it
when its block ends, however it ends, so the daemon can end that client's
request tasks at once. It offers what ``purerpc.Client`` reads from a channel.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from purerpc.grpc_proto import GRPCProtoSocket
from purerpc.grpclib.config import GRPCConfiguration


@dataclass(frozen=True)
class Channel:
    _grpc_socket: Any
    _host: str
    _port: int


@asynccontextmanager
async def open_channel(host: str, port: int, ssl_context: ssl.SSLContext) -> AsyncIterator[Channel]:
    """Connect over TLS and speak gRPC; the connection is closed on exit.

    Connection and handshake errors propagate as anyio/OSError/ssl exceptions.
    """
    stream = await anyio.connect_tcp(
        host, port, ssl_context=ssl_context, tls=True, tls_standard_compatible=False
    )
    async with stream, GRPCProtoSocket(GRPCConfiguration(client_side=True), stream) as grpc:
        yield Channel(grpc, host, port)

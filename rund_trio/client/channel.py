"""purerpc's client channel, adapted to end cleanly.

purerpc 0.8's ``secure_channel`` has two gaps this module closes:

* it never closes the TCP connection it opens (its socket wrapper has no
  ``aclose``), so the daemon only learns that a client left when the client
  process exits. This channel owns the connection and closes it when its block
  ends, however it ends, so the daemon ends that client's request tasks at once;
* when the connection drops (the daemon refused the client's certificate,
  the daemon went away), its reader task ends silently and every call still
  waiting for an answer hangs forever. Here each open call then ends with
  UNAVAILABLE, naming why the connection ended.

``Channel`` offers what ``purerpc.Client`` reads from a channel.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h2.events
import h2.exceptions
from anyio.streams.tls import TLSAttribute
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import ResponseEnded, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode

from rund_trio.client.diagnose import Diagnosed, diagnose_lost, diagnose_not_grpc
from rund_trio.errors import sole_exception
from rund_trio.wire.http2 import GrpcConnection
from rund_trio.wire.tls import TlsStream

CONNECTION_LOST = "connection lost"


class _ClientConnection(GrpcConnection):
    def _stream_reset(self, event: h2.events.StreamReset) -> list[Any]:
        # Wakes a call waiting for flow-control credit to send on a stream the
        # daemon reset (it refused the request from its first bytes).
        return [WindowUpdated(stream_id=event.stream_id, delta=0)]


class _ClientStream(GRPCProtoStream):  # type: ignore[misc]
    async def _wait_flow_control_update(self) -> None:
        await super()._wait_flow_control_update()
        h2_stream = self._grpc_connection.h2_connection.streams.get(self._stream_id)
        if h2_stream is None or h2_stream.closed:
            # The credit will never come: fail the send as h2 fails sending on it.
            raise h2.exceptions.StreamClosedError(self._stream_id)


class _ClientSocket(GRPCProtoSocket):  # type: ignore[misc]
    StreamClass = _ClientStream

    def __init__(self, config: GRPCConfiguration, stream: anyio.abc.ByteStream, addr: str) -> None:
        super().__init__(config, stream)
        connection = _ClientConnection(config=config)
        self._grpc_connection = connection
        self._socket._grpc_connection = connection
        self.addr = addr
        self.answered = False
        """The daemon sent something on this connection (its HTTP/2 settings)."""
        self.end_error: BaseException | None = None
        receive = self._socket.recv

        async def recv(size: int) -> bytes:
            try:
                data: bytes = await receive(size)
            except anyio.BrokenResourceError as error:
                self.end_error = error
                raise
            self.answered = self.answered or bool(data)
            return data

        self._socket.recv = recv

    def lost(self, error: BaseException | None = None) -> Diagnosed:
        """Why this connection ended, as the error to raise."""
        return Diagnosed(diagnose_lost(error or self.end_error, self.addr, answered=self.answered))

    async def _reader_thread(self) -> None:
        try:
            await super()._reader_thread()
        finally:
            status = Status(
                StatusCode.UNAVAILABLE,
                status_message=f"{CONNECTION_LOST}: {self.lost().diagnosis.message}",
            )
            for stream_id, stream in list(self._streams.items()):
                if stream.state in (GRPCStreamState.OPEN, GRPCStreamState.HALF_CLOSED_LOCAL):
                    stream._incoming_events[0].send_nowait(ResponseEnded(stream_id, status))


@dataclass(frozen=True)
class Channel:
    _grpc_socket: Any
    _host: str
    _port: int

    def lost(self, error: BaseException | None = None) -> Diagnosed:
        """Why the connection ended (``error``: what a call raised), as the error to raise."""
        lost: Diagnosed = self._grpc_socket.lost(error)
        return lost


@asynccontextmanager
async def open_channel(host: str, port: int, ssl_context: ssl.SSLContext) -> AsyncIterator[Channel]:
    """Connect over TLS and speak gRPC; the connection is closed on exit.

    Connection and handshake errors propagate as OSError, ssl.SSLError or
    anyio.BrokenResourceError.
    """
    tcp = await anyio.connect_tcp(host, port)
    try:
        stream = await TlsStream.wrap(
            tcp, hostname=host, ssl_context=ssl_context, standard_compatible=False
        )
    except BaseException:
        await anyio.aclose_forcefully(tcp)
        raise
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if stream.extra(TLSAttribute.alpn_protocol, None) != "h2":
        await anyio.aclose_forcefully(stream)
        raise Diagnosed(diagnose_not_grpc(addr))
    config = GRPCConfiguration(client_side=True)
    try:
        async with stream, _ClientSocket(config, stream, addr) as grpc:
            yield Channel(grpc, host, port)
    except BaseExceptionGroup as group:
        # purerpc's task groups wrap whatever the caller's block raised.
        raise sole_exception(group) from None

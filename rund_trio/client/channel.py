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

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h2.events
import h2.exceptions
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.events import ResponseEnded, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode

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

    def __init__(self, config: GRPCConfiguration, stream: anyio.abc.ByteStream) -> None:
        super().__init__(config, stream)
        connection = _ClientConnection(config=config)
        self._grpc_connection = connection
        self._socket._grpc_connection = connection
        self._end_reason = (
            "the daemon closed the connection (at once, it means the daemon refused this "
            "client's certificate: check --cert and --key against the daemon's --ca)"
        )
        receive = self._socket.recv

        async def recv(size: int) -> bytes:
            try:
                data: bytes = await receive(size)
            except anyio.BrokenResourceError as error:
                self._end_reason = describe_connection_error(error)
                raise
            return data

        self._socket.recv = recv

    async def _reader_thread(self) -> None:
        try:
            await super()._reader_thread()
        finally:
            status = Status(
                StatusCode.UNAVAILABLE, status_message=f"{CONNECTION_LOST}: {self._end_reason}"
            )
            for stream_id, stream in list(self._streams.items()):
                if stream.state in (GRPCStreamState.OPEN, GRPCStreamState.HALF_CLOSED_LOCAL):
                    stream._incoming_events[0].send_nowait(ResponseEnded(stream_id, status))


@dataclass(frozen=True)
class Channel:
    _grpc_socket: Any
    _host: str
    _port: int


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
    try:
        async with stream, _ClientSocket(GRPCConfiguration(client_side=True), stream) as grpc:
            yield Channel(grpc, host, port)
    except BaseExceptionGroup as group:
        # purerpc's task groups wrap whatever the caller's block raised.
        raise sole_exception(group) from None


def describe_connection_error(error: BaseException) -> str:
    """A short human reason for a connection error: the TLS alert, the OS
    error, or the error itself."""
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error).lower().replace("_", " ")
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)  # asyncio words it "Connect call failed (...)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error:
        return describe_connection_error(cause)
    return str(error) or type(error).__name__

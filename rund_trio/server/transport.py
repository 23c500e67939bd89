"""purerpc's server side, adapted to serve rund-trio safely.

purerpc 0.8 provides the HTTP/2 + gRPC framing this module builds on, but its
``Server`` and ``ConnectionHandler`` are not fit for a daemon (read from its
source and tried here):

* it binds every interface with SO_REUSEPORT, ignoring the host asked for;
* it has no TLS handshake timeout, so a silent client holds a slot forever;
* it gives handlers no access to the peer certificate;
* it ignores RST_STREAM and, when the client closes the connection, still
  waits for every handler, so a Log handler waiting on an idle job never ends;
* its bare ``except:`` swallows ``trio.Cancelled``;
* it parses grpc-timeout but never enforces it;
* a response stream's messages are queued in memory as fast as the client's
  flow-control window allows (purerpc's own client opens 64 MiB per stream),
  however slowly the client reads them.

So this module keeps purerpc's wire machinery (``GRPCProtoSocket``, its
streams, ``purerpc.Service`` method tables) and replaces the rest: the caller
binds the listener; each connection gets a bounded TLS handshake; the peer's
identity goes into a context variable that every request task inherits; each
request runs in its own task inside a per-connection nursery, under its own
cancel scope, cancelled when the client resets the stream, when the deadline
passes, or when the connection ends; a streaming handler sends its next
message only once the previous ones were written to the socket, so a slow
reader holds back its own stream and nothing piles up in the daemon's memory.
Errors map to gRPC statuses in one place
(``rund_trio.server.status``).
"""

from __future__ import annotations

import contextvars
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import h2.exceptions
import trio
from anyio.streams.tls import TLSAttribute, TLSStream
from google.protobuf.message import DecodeError
from purerpc import Service
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpc_socket import GRPCStreamState, SocketWrapper
from purerpc.grpclib.connection import GRPCConfiguration
from purerpc.grpclib.events import RequestEnded, RequestReceived, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode
from purerpc.rpc import Cardinality

from rund_trio.errors import ConfigError, InvalidRequest
from rund_trio.server.connection import ServerConnection, StreamRejected, StreamReset
from rund_trio.server.status import status_for_exception
from rund_trio.tls.identity import Identity, identity_from_peer_certificate
from rund_trio.wire.job_log import FramedMessage
from rund_trio.wire.tls import TlsStream

log = logging.getLogger(__name__)

_peer_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("rund_peer_identity")


def current_identity() -> Identity:
    """The verified identity of the client whose request this task serves."""
    return _peer_identity.get()


MAX_REQUEST_SIZE_LIMIT = 2**30
MAX_RESPONSE_SIZE = 4 * 1024 * 1024
"""Largest message the daemon sends (Log chunks are at most 1 MiB)."""


@dataclass(frozen=True)
class TransportConfig:
    handshake_timeout: float = 10.0
    """Seconds a new connection has to complete its TLS handshake."""
    max_request_size: int = 4 * 1024 * 1024
    """Largest request message accepted, as in gRPC's default; checked from the
    message's length prefix, before its body is buffered."""
    max_streams_per_connection: int = 1024
    """Requests one connection may have open at once (HTTP/2
    SETTINGS_MAX_CONCURRENT_STREAMS); a client that opens more loses the
    connection. Above the default cap on a client's Log streams."""

    def __post_init__(self) -> None:
        # purerpc opens each stream's receive window at twice the largest
        # message, and HTTP/2 windows end at 2**31 - 1.
        if not 1 <= self.max_request_size < MAX_REQUEST_SIZE_LIMIT:
            raise ConfigError(
                f"--max-request-size must be between 1 byte and {MAX_REQUEST_SIZE_LIMIT - 1} "
                f"bytes, not {self.max_request_size}"
            )
        if self.max_streams_per_connection < 1:
            raise ConfigError(
                "--max-streams-per-connection must be at least 1, "
                f"not {self.max_streams_per_connection}"
            )


class _Writer(SocketWrapper):  # type: ignore[misc]
    """purerpc's connection writer (one task writing whatever the HTTP/2
    connection has queued), able to tell when all of it went to the socket."""

    _flush_event: anyio.Event

    def __init__(self, connection: ServerConnection, sock: anyio.abc.ByteStream) -> None:
        super().__init__(connection, sock)
        self._idle = anyio.Event()
        """Set (and replaced) each time the writer finds nothing left to write."""

    async def _writer_thread(self) -> None:
        try:
            while True:
                data = self._grpc_connection.data_to_send()
                if data:
                    await self._stream.send(data)
                elif self._running:
                    self._idle.set()
                    self._idle = anyio.Event()
                    await self._flush_event.wait()
                    self._flush_event = anyio.Event()
                else:
                    return
        finally:
            self._idle.set()  # the connection is over: nobody waits for it

    async def drained(self) -> None:
        """Return once everything queued before the call was written to the
        socket (or the connection ended). Waits as long as the client reads
        slower than the daemon writes."""
        idle = self._idle
        self._flush_event.set()
        await idle.wait()


class _Socket(GRPCProtoSocket):  # type: ignore[misc]
    """purerpc's server socket that also reports stream resets, answers
    malformed requests per stream (``ServerConnection``), ignores frames for
    streams it no longer tracks, ends a connection that breaks the HTTP/2
    protocol with GOAWAY instead of an exception, and can wait for its output
    to drain."""

    def __init__(
        self, config: GRPCConfiguration, sock: anyio.abc.ByteStream, caps: TransportConfig
    ) -> None:
        super().__init__(config, sock)
        connection = ServerConnection(
            config,
            max_request_size=caps.max_request_size,
            max_concurrent_streams=caps.max_streams_per_connection,
        )
        self._grpc_connection = connection
        self.writer = _Writer(connection, sock)
        self._socket = self.writer

    async def events(self) -> AsyncIterator[GRPCProtoStream | StreamReset]:
        """New request streams and stream resets, until the client goes away."""
        while True:
            try:
                data = await self._socket.recv(self._receive_buffer_size)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            try:
                events = self._grpc_connection.receive_data(data)
            except h2.exceptions.ProtocolError as error:
                # h2 has queued GOAWAY; it is sent as the connection closes.
                log.info("closing a connection that broke HTTP/2: %s", self._why(error))
                return
            await self._socket.flush()
            for event in events:
                if isinstance(event, StreamRejected):
                    # Handed to the handler; the client's own end of the
                    # request is yet to come.
                    rejected = self._streams.get(event.stream_id)
                    if rejected is not None:
                        await rejected._incoming_events[0].send(event)
                    continue
                if isinstance(event, StreamReset):
                    self._streams.pop(event.stream_id, None)
                    yield event
                    continue
                if isinstance(event, WindowUpdated):
                    targets = (
                        list(self._streams.values())
                        if event.stream_id == 0
                        else [self._streams[event.stream_id]]
                        if event.stream_id in self._streams
                        else []
                    )
                    for stream in targets:
                        await stream._set_flow_control_update()
                    continue
                if isinstance(event, RequestReceived):
                    self._allocate_stream(event.stream_id)
                stream = self._streams.get(event.stream_id)
                if stream is None:
                    continue
                await stream._incoming_events[0].send(event)
                if isinstance(event, RequestReceived):
                    yield stream
                elif isinstance(event, RequestEnded) and event.stream_id in self._streams:
                    # (``finish`` may have dropped it while the event was queued)
                    stream._close_remote()

    def _why(self, error: h2.exceptions.ProtocolError) -> str:
        if isinstance(error, h2.exceptions.TooManyStreamsError):
            limit = self._grpc_connection.MAX_CONCURRENT_STREAMS
            return f"it opened more than {limit} streams at once (--max-streams-per-connection)"
        return str(error) or type(error).__name__

    async def finish(self, stream: GRPCProtoStream, status: Status) -> None:
        """Answer ``stream`` with ``status``; if the client is still sending
        (an answer before the whole request, e.g. an error), reset the stream
        so that it stops, as gRPC servers do."""
        await stream.close(status)
        if stream.state is GRPCStreamState.CLOSED:
            return
        self._streams.pop(stream.stream_id, None)
        self._grpc_connection.stop_reading(stream.stream_id)
        await self._socket.flush()


@dataclass
class _Request:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reset: bool = False


class GrpcServer:
    """Serves purerpc ``Service``s over TLS on listeners the caller binds."""

    def __init__(
        self,
        services: list[Service],
        ssl_context: ssl.SSLContext,
        config: TransportConfig | None = None,
    ) -> None:
        self._services = {service.name: service for service in services}
        self._ssl_context = ssl_context
        self._config = config or TransportConfig()
        self._grpc_config = GRPCConfiguration(
            client_side=False,
            max_message_length=max(self._config.max_request_size, MAX_RESPONSE_SIZE),
        )
        self.connections = 0
        """Connections currently open (for tests and diagnostics)."""
        self.requests = 0
        """Request tasks currently running (for tests and diagnostics)."""
        self._counts_changed = trio.lowlevel.ParkingLot()

    async def wait_until_idle(self) -> None:
        """Return once no connection is open and no request task runs."""
        while self.connections or self.requests:
            await self._counts_changed.park()

    async def wait_until_requests_change(self) -> None:
        """Return at the next change of the connection or request counts."""
        await self._counts_changed.park()

    async def wait_for_requests(self, count: int) -> None:
        """Return once at least ``count`` request tasks run at the same time."""
        while self.requests < count:
            await self._counts_changed.park()

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Accept connections until cancelled; cancellation ends every
        connection and request task. The caller owns (and closes) the listener."""
        await listener.serve(self._handle_connection)

    async def _handle_connection(self, tcp: anyio.abc.SocketStream) -> None:
        self.connections += 1
        try:
            async with tcp:
                tls = await self._handshake(tcp)
                if tls is None:
                    return
                _peer_identity.set(
                    identity_from_peer_certificate(tls.extra(TLSAttribute.peer_certificate))
                )
                try:
                    await self._serve_grpc(tls)
                except Exception as error:
                    log.debug("connection ended by an error: %r", error)
        finally:
            self.connections -= 1
            self._counts_changed.unpark_all()

    async def _handshake(self, tcp: anyio.abc.SocketStream) -> TLSStream | None:
        try:
            with anyio.fail_after(self._config.handshake_timeout):
                return await TlsStream.wrap(
                    tcp, server_side=True, ssl_context=self._ssl_context, standard_compatible=False
                )
        except TimeoutError:
            log.info("TLS handshake timed out")
        except Exception as error:  # every failure here is the peer's: refuse and move on
            log.info("TLS handshake failed: %s", error)
        return None

    async def _serve_grpc(self, stream: anyio.abc.ByteStream) -> None:
        requests: dict[int, _Request] = {}
        async with (
            _Socket(self._grpc_config, stream, self._config) as grpc_socket,
            trio.open_nursery() as nursery,
        ):
            async for event in grpc_socket.events():
                if isinstance(event, StreamReset):
                    request = requests.get(event.stream_id)
                    if request is not None:
                        request.reset = True
                        request.scope.cancel()
                    continue
                request = requests[event.stream_id] = _Request()
                nursery.start_soon(self._handle_request, grpc_socket, event, request, requests)
            # The client is gone: nobody will read what the handlers still have to say.
            nursery.cancel_scope.cancel()

    async def _handle_request(
        self,
        grpc_socket: _Socket,
        stream: GRPCProtoStream,
        request: _Request,
        requests: dict[int, _Request],
    ) -> None:
        self.requests += 1
        self._counts_changed.unpark_all()
        try:
            with request.scope:
                status = await self._dispatch(stream, grpc_socket.writer)
                if status is not None:
                    await grpc_socket.finish(stream, status)
        except Exception as error:
            log.debug("request on stream %d ended by %r", stream.stream_id, error)
        finally:
            self.requests -= 1
            requests.pop(stream.stream_id, None)
            self._counts_changed.unpark_all()

    async def _dispatch(self, stream: GRPCProtoStream, writer: _Writer) -> Status | None:
        await stream.start_response()
        event = await stream.receive_event()
        if not isinstance(event, RequestReceived):
            return Status(StatusCode.INTERNAL, status_message="expected request headers")
        service = self._services.get(event.service_name)
        method = service.methods.get(event.method_name) if service else None
        if method is None:
            return Status(
                StatusCode.UNIMPLEMENTED,
                status_message=f"unknown method /{event.service_name}/{event.method_name}",
            )
        deadline = trio.current_time() + event.timeout.total_seconds() if event.timeout else None
        with trio.CancelScope(deadline=deadline or float("inf")) as deadline_scope:
            try:
                return await self._call(stream, writer, event, method.method_fn, method.signature)
            except h2.exceptions.StreamClosedError:
                # The client reset the stream (it stopped reading a Log) and h2
                # forgot it before the reset reached this request's cancel scope.
                log.debug("stream %d was reset by the client", stream.stream_id)
                return None
            except Exception as error:
                return status_for_exception(error)
        assert deadline_scope.cancelled_caught
        return Status(StatusCode.DEADLINE_EXCEEDED, status_message="deadline exceeded")

    async def _call(
        self,
        stream: GRPCProtoStream,
        writer: _Writer,
        event: RequestReceived,
        method_fn: Callable[..., Any],
        signature: Any,
    ) -> Status:
        stream.expect_message_type(signature.request_type)
        if signature.cardinality == Cardinality.STREAM_UNARY:
            response = await method_fn(_messages(stream, signature.request_type), request=event)
            await stream.send_message(response)
            return Status(StatusCode.OK)
        message = await _single_message(stream, signature.request_type)
        if signature.cardinality == Cardinality.UNARY_UNARY:
            response = await method_fn(message, request=event)
            await stream.send_message(response)
        elif signature.cardinality == Cardinality.UNARY_STREAM:
            responses = method_fn(message, request=event)
            try:
                async for response in responses:
                    if isinstance(response, FramedMessage):
                        await _send_framed(stream, response)
                    else:
                        await stream.send_message(response)
                    await writer.drained()
            finally:
                await responses.aclose()
        else:
            return Status(StatusCode.UNIMPLEMENTED, status_message="bidi streaming is not served")
        return Status(StatusCode.OK)


async def _send_framed(stream: GRPCProtoStream, message: FramedMessage) -> None:
    """Send an encoded message as purerpc's ``_send`` would, without copying
    it into purerpc's buffer first: DATA frames as the flow-control window
    allows, each a view of ``message``."""
    connection = stream._grpc_connection
    view = memoryview(message)
    while view:
        window = connection.flow_control_window(stream.stream_id)
        if window <= 0:
            await stream._wait_flow_control_update()
            continue
        connection.send_data(stream.stream_id, view[:window])
        view = view[window:]
        await stream._socket.flush()


async def _messages(stream: GRPCProtoStream, message_type: Any) -> AsyncIterator[Any]:
    """A client-streaming request's messages until the client ends it. Each
    is read (and its bytes credited to the client's HTTP/2 window) only when
    the handler asks for it: a handler that stops asking holds back the client."""
    while True:
        try:
            message = await stream.receive_message()
        except DecodeError:
            raise InvalidRequest(
                f"a request message is not a valid {message_type.DESCRIPTOR.full_name} message"
            ) from None
        if message is None:
            if isinstance(stream.end_stream_event, StreamRejected):
                raise stream.end_stream_event.error
            return
        yield message


async def _single_message(stream: GRPCProtoStream, message_type: Any) -> Any:
    try:
        message = await stream.receive_message()
    except DecodeError:
        raise InvalidRequest(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"
        ) from None
    if message is None:
        if isinstance(stream.end_stream_event, StreamRejected):
            raise stream.end_stream_event.error
        raise InvalidRequest("the request has no message")
    return message

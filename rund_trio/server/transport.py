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
* it parses grpc-timeout but never enforces it.

So this module keeps purerpc's wire machinery (``GRPCProtoSocket``, its
streams, ``purerpc.Service`` method tables) and replaces the rest: the caller
binds the listener; each connection gets a bounded TLS handshake; the peer's
identity goes into a context variable that every request task inherits; each
request runs in its own task inside a per-connection nursery, under its own
cancel scope, cancelled when the client resets the stream, when the deadline
passes, or when the connection ends. Errors map to gRPC statuses in one place
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
import h2.events
import trio
from anyio.streams.tls import TLSAttribute, TLSStream
from google.protobuf.message import DecodeError
from purerpc import Service
from purerpc.grpc_proto import GRPCProtoSocket, GRPCProtoStream
from purerpc.grpclib.connection import GRPCConfiguration
from purerpc.grpclib.events import RequestEnded, RequestReceived, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode
from purerpc.rpc import Cardinality

from rund_trio.errors import InvalidRequest
from rund_trio.server.status import status_for_exception
from rund_trio.tls.identity import Identity, identity_from_peer_certificate
from rund_trio.wire.http2 import GrpcConnection
from rund_trio.wire.job_log import FramedMessage
from rund_trio.wire.tls import TlsStream

log = logging.getLogger(__name__)

_peer_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("rund_peer_identity")


def current_identity() -> Identity:
    """The verified identity of the client whose request this task serves."""
    return _peer_identity.get()


@dataclass(frozen=True)
class TransportConfig:
    handshake_timeout: float = 10.0
    """Seconds a new connection has to complete its TLS handshake."""
    max_message_length: int = 4 * 1024 * 1024
    """Largest request message accepted, as in gRPC's default."""


class _StreamReset:
    """The client sent RST_STREAM for ``stream_id``: it no longer wants the answer."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _Connection(GrpcConnection):
    def _stream_reset(self, event: h2.events.StreamReset) -> list[Any]:
        return [_StreamReset(event.stream_id)]


class _Socket(GRPCProtoSocket):  # type: ignore[misc]
    """purerpc's server socket that also reports stream resets and ignores
    frames for streams it no longer tracks instead of crashing the connection."""

    def __init__(self, config: GRPCConfiguration, sock: anyio.abc.ByteStream) -> None:
        super().__init__(config, sock)
        connection = _Connection(config=config)
        self._grpc_connection = connection
        self._socket._grpc_connection = connection

    async def events(self) -> AsyncIterator[GRPCProtoStream | _StreamReset]:
        """New request streams and stream resets, until the client goes away."""
        while True:
            try:
                data = await self._socket.recv(self._receive_buffer_size)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            events = self._grpc_connection.receive_data(data)
            await self._socket.flush()
            for event in events:
                if isinstance(event, _StreamReset):
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
                elif isinstance(event, RequestEnded):
                    stream._close_remote()


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
            client_side=False, max_message_length=self._config.max_message_length
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
            _Socket(self._grpc_config, stream) as grpc_socket,
            trio.open_nursery() as nursery,
        ):
            async for event in grpc_socket.events():
                if isinstance(event, _StreamReset):
                    request = requests.get(event.stream_id)
                    if request is not None:
                        request.reset = True
                        request.scope.cancel()
                    continue
                request = requests[event.stream_id] = _Request()
                nursery.start_soon(self._handle_request, event, request, requests)
            # The client is gone: nobody will read what the handlers still have to say.
            nursery.cancel_scope.cancel()

    async def _handle_request(
        self, stream: GRPCProtoStream, request: _Request, requests: dict[int, _Request]
    ) -> None:
        self.requests += 1
        self._counts_changed.unpark_all()
        try:
            with request.scope:
                status = await self._dispatch(stream)
                if status is not None:
                    await stream.close(status)
        except Exception as error:
            log.debug("request on stream %d ended by %r", stream.stream_id, error)
        finally:
            self.requests -= 1
            requests.pop(stream.stream_id, None)
            self._counts_changed.unpark_all()

    async def _dispatch(self, stream: GRPCProtoStream) -> Status | None:
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
                return await self._call(stream, event, method.method_fn, method.signature)
            except Exception as error:
                return status_for_exception(error)
        assert deadline_scope.cancelled_caught
        return Status(StatusCode.DEADLINE_EXCEEDED, status_message="deadline exceeded")

    async def _call(
        self,
        stream: GRPCProtoStream,
        event: RequestReceived,
        method_fn: Callable[..., Any],
        signature: Any,
    ) -> Status:
        stream.expect_message_type(signature.request_type)
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
            finally:
                await responses.aclose()
        else:
            return Status(StatusCode.UNIMPLEMENTED, status_message="client streaming is not served")
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


async def _single_message(stream: GRPCProtoStream, message_type: Any) -> Any:
    try:
        message = await stream.receive_message()
    except DecodeError:
        raise InvalidRequest(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"
        ) from None
    if message is None:
        raise InvalidRequest("the request has no message")
    return message

"""The server side on trio: ``GrpcServer`` serves purerpc ``Service``s over
any trio byte stream, driving one ``GrpcConnection`` per connection.

Per connection: a bounded TLS handshake (when the server has a TLS context),
the peer's identity in a context variable every request task inherits, one
reader task (the only caller of ``next_event``) and one writer task (the only
caller of ``send_all``: cancelling a request never interrupts a write). Each
request runs in its own task under its own cancel scope, cancelled when the
client resets the stream, when the connection ends, or (with
DEADLINE_EXCEEDED) when its grpc-timeout passes. A handler's next message
goes out only once the previous ones reached the stream, so a slow reader
holds back its own stream and nothing piles up in the daemon's memory.

The unary path: a method registered with ``nonblocking_unary`` (a plain
function that answers at once, never awaiting) is answered by the reader
itself, without a task, once its headers and message came in the bytes of
one read (at its end of stream, or before the reader waits for more bytes):
its status, deadline and call record are those the task would have given. A
call whose message is still missing when the reader must wait for bytes
again is handed to a task as any other, so a slow client, a reset stream and
a deadline are handled where they always are.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import logging
import math
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from google.protobuf.message import DecodeError, Message
from purerpc import Cardinality, RPCSignature, Service, Servicer

from rund_trio.errors import ConfigError, InvalidRequest
from rund_trio.rpc._core import GrpcConnection, Role
from rund_trio.rpc._errors import RemoteProtocolError
from rund_trio.rpc._events import (
    NEED_DATA,
    ConnectionClosed,
    MessageReceived,
    RequestEnded,
    RequestReceived,
    RequestRefused,
    StreamRejected,
    StreamReset,
)
from rund_trio.rpc._server_tls import ServerTls
from rund_trio.rpc._status import Status, StatusCode
from rund_trio.server.admission import Admission, AdmissionLimits, HandshakeTicket
from rund_trio.server.calls import CallRecord, HandshakeOutcome, NullObserver, Observer
from rund_trio.server.status import status_for_exception
from rund_trio.tls.identity import Identity, identity_from_der
from rund_trio.wire.job_log import FramedMessage

__all__ = [
    "MAX_REQUEST_SIZE_LIMIT",
    "Cardinality",
    "GrpcServer",
    "NonBlockingUnary",
    "PeerContext",
    "RPCSignature",
    "Service",
    "Servicer",
    "TransportConfig",
    "current_identity",
    "current_peer",
    "nonblocking_unary",
]

log = logging.getLogger("rund_trio.rpc")

MAX_REQUEST_SIZE_LIMIT = 2**30
ACCEPT_BACKOFF = 0.1
"""Seconds accepting pauses when the process is out of descriptors."""
ACCEPT_BATCH = 256
"""Connections accepted at most before letting other tasks run."""
_LINGER_RESET = struct.pack("ii", 1, 0)
_PEER_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
"""accept() errors about one connection (gone before it was taken), not the listener."""


@dataclass(frozen=True)
class PeerContext:
    """Who is on the other end of a connection."""

    address: str
    """``host:port``, or a name for a stream that has no address."""
    identity: Identity
    certificate_sha256: str


_peer: contextvars.ContextVar[PeerContext] = contextvars.ContextVar("rund_peer")


def current_peer() -> PeerContext:
    """The peer of the connection whose request this task serves."""
    return _peer.get()


def current_identity() -> Identity:
    """The verified identity of the client whose request this task serves."""
    return _peer.get().identity


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
        # Each stream's receive window is twice the largest message, and
        # HTTP/2 windows end at 2**31 - 1.
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


class NonBlockingUnary:
    """A unary-unary handler that answers at once: a plain function of the
    request message, which never awaits (it may raise, as any handler). The
    server answers it on the connection's reader, without a task, when its
    message is at hand (see the module's docstring); called as a
    coroutine function it behaves as any other handler."""

    __slots__ = ("answer", "request_type")

    def __init__(self, answer: Callable[[Any], Message], request_type: type[Message]) -> None:
        self.answer = answer
        self.request_type = request_type

    async def __call__(self, message: Any, request: RequestReceived) -> Message:
        return self.answer(message)


def nonblocking_unary(
    service: Service,
    name: str,
    answer: Callable[[Any], Message],
    signature: RPCSignature,
) -> None:
    """Register (or replace) ``name`` on ``service`` as a ``NonBlockingUnary``
    handler: ``answer(message)`` returns the response and must not block.

    Raises:
        ValueError: ``signature`` is not unary-unary.
    """
    if signature.cardinality is not Cardinality.UNARY_UNARY:
        raise ValueError(f"{name}: only a unary-unary method can be answered without a task")
    service.add_method(name, NonBlockingUnary(answer, signature.request_type), signature)


class _Rejected(Exception):
    def __init__(self, status: Status) -> None:
        self.status = status


class _Request:
    """A call the reader has seen the headers of: served by its own task, or
    (``answer`` set) waiting to be answered by the reader."""

    __slots__ = ("answer", "arrived", "event", "first", "inbox", "scope")

    def __init__(self, event: RequestReceived, answer: NonBlockingUnary | None = None) -> None:
        self.event = event
        self.answer = answer
        """The handler that will answer the call on the reader, while no task serves it."""
        self.scope = trio.CancelScope()
        self.inbox: list[MessageReceived | StreamRejected | None] = []
        self.arrived = trio.Event()
        self.first: Message | None = None


class _Connection:
    """One connection's core, stream and writer task."""

    def __init__(self, core: GrpcConnection, stream: trio.abc.Stream, peer: PeerContext) -> None:
        self.core = core
        self.stream = stream
        self.peer = peer
        self._queued = 0
        self._written = 0
        self._wake = trio.Event()
        self._progress = trio.lowlevel.ParkingLot()
        self.broken = False
        self.on_broken: Callable[[], object] = lambda: None
        """Called once the stream broke while writing (the connection is over)."""
        self.requests: dict[int, _Request] = {}
        """The calls the reader has seen and not yet seen end, by stream id."""
        self.closing = False
        """The server said goodbye (GOAWAY): the reader drains what the peer
        still sends, until it closes its side."""

    def wake(self) -> None:
        """Tell the writer that the core has (or may have) bytes to send."""
        self._queued += 1
        self._wake.set()
        self._progress.unpark_all()

    def poke(self) -> None:
        """After reading: wake the writer if the core has bytes to send (a
        WINDOW_UPDATE, a SETTINGS ack, a flow-controlled message let go), and
        let ``drained()`` look again in any case."""
        if self.core.has_data_to_send():
            self.wake()
        else:
            self._progress.unpark_all()

    async def writer(self) -> None:
        """Write what the core queues, in order, until cancelled or the stream breaks."""
        try:
            while True:
                seen = self._queued
                buffers = self.core.buffers_to_send()
                if buffers:
                    for data in buffers:  # a large message's payload: uncopied
                        await self.stream.send_all(data)
                    self._written = seen
                    self._progress.unpark_all()
                    continue
                self._written = seen
                self._progress.unpark_all()
                self._wake = trio.Event()
                if self._queued == seen:
                    await self._wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            log.debug("a connection's stream broke while writing: %r", error)
            self.on_broken()
        finally:
            self.broken = True
            self._progress.unpark_all()

    async def drained(self, stream_id: int) -> None:
        """Return once everything queued on ``stream_id`` before the call
        reached the stream (or the connection broke). Waits as long as the
        peer's flow-control window or its reading holds it back.

        **Cancellation:** safe; what was queued stays queued."""
        while self.core.pending(stream_id) and not self.broken:
            await self._progress.park()
        target = self._queued
        while self._written < target and not self.broken:
            await self._progress.park()

    async def flush(self) -> None:
        """Return once everything queued reached the stream (or it broke)."""
        target = self._queued
        while self._written < target and not self.broken:
            await self._progress.park()


class GrpcServer:
    """Serves purerpc ``Service``s (any of the four cardinalities, several
    services at once) on listeners or streams the caller owns."""

    def __init__(
        self,
        services: Sequence[Service],
        ssl_context: ssl.SSLContext | None,
        config: TransportConfig | None = None,
        observer: Observer | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._services = {service.name: service for service in services}
        self._ssl_context = ssl_context
        self._config = config or TransportConfig()
        self._observer: Observer = observer or NullObserver()
        self.admission = admission or Admission(_NO_CAPS)
        """Which connections are taken on (``rund_trio.server.admission``);
        default: every one."""
        self.connections = 0
        """Connections currently open (for tests and diagnostics)."""
        self.requests = 0
        """Request tasks currently running (for tests and diagnostics)."""
        self._counts_changed = trio.lowlevel.ParkingLot()
        self._live: set[_Connection] = set()
        self._closing = False

    async def shut_down(self, timeout: float) -> None:
        """Say goodbye on every connection, and return once they have all
        closed, or after ``timeout`` seconds (the caller then cancels what is left).

        On each connection, in this order: the handlers of the calls still
        open are cancelled; a GOAWAY is written after everything queued
        before it (so a message a handler sent, such as a health watcher's
        NOT_SERVING, reaches the peer first), then a RST_STREAM (CANCEL) for
        each of those calls (the peer learns first that the connection ends,
        and a client with no call left closes its side); then what the peer
        still sends is read and dropped until it closes its side, and only
        then is the connection closed: closing a TCP
        socket with unread bytes would reset it, and the peer could lose
        what it had not read yet. A connection that opens meanwhile is told
        goodbye as soon as its handshake is done.

        **Cancellation:** safe; the connections are then closed by whoever
        cancels the server (``serve_on``)."""
        self._closing = True
        for connection in list(self._live):
            self._say_goodbye(connection)
        with trio.move_on_after(timeout):
            while self.connections:
                await self._counts_changed.park()

    def _say_goodbye(self, connection: _Connection) -> None:
        if connection.closing:
            return
        connection.closing = True
        for stream_id, request in list(connection.requests.items()):
            if request.answer is not None:  # no task: the reader would have answered it
                del connection.requests[stream_id]
                request.answer = None
                self._finish(
                    request, _SHUTTING_DOWN, connection.peer, trio.current_time(), time.time()
                )
            request.scope.cancel()
        connection.core.close("the daemon is shutting down", reset_calls=True)
        connection.wake()

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

    async def serve_on(self, listener: trio.abc.Listener[Any]) -> None:
        """Accept connections on ``listener`` and serve each in its own task.
        Never returns unless cancelled.

        Each new connection asks the admission for a handshake ticket first:
        one refused is closed at once (*shed*, ``HandshakeOutcome.SHED`` to
        the observer). On a ``trio.SocketListener`` the listening socket is
        drained here directly, and a shed connection is reset with two system
        calls and no task or stream object, so that a flood of them cannot
        outrun this loop and fill the kernel's accept queue (which would drop
        legitimate clients' SYNs too). Running out of descriptors (EMFILE and
        the like) pauses accepting for ``ACCEPT_BACKOFF`` seconds instead of
        ending the server.

        **Cancellation:** ends every connection and request task before it
        returns. The caller owns (and closes) the listener."""
        if isinstance(listener, trio.SocketListener):
            await self._serve_socket_listener(listener)
            return
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as error:
                    log.warning("cannot accept connections: %s", error.strerror or error)
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                peer = _peer_address(stream)
                source = _source_of(peer)
                ticket = self.admission.try_begin_handshake(source)
                if ticket is None:
                    self._shed(peer, source)
                    await stream.aclose()
                    continue
                nursery.start_soon(self._serve_connection, stream, peer, ticket)

    async def _serve_socket_listener(self, listener: trio.SocketListener) -> None:
        # A stdlib socket object on the listener's own descriptor (no new
        # one: this must work when descriptors have run out), so that accept()
        # is the plain system call, never awaited. detach() leaves the
        # descriptor to the listener, which the caller closes.
        raw = socket.socket(fileno=listener.socket.fileno())
        try:
            raw.setblocking(False)
            async with trio.open_nursery() as nursery:
                while True:
                    await trio.lowlevel.wait_readable(raw)
                    await self._accept_batch(raw, nursery)
                    await trio.lowlevel.checkpoint()
        finally:
            raw.detach()

    async def _accept_batch(self, raw: socket.socket, nursery: trio.Nursery) -> None:
        """Take up to ``ACCEPT_BATCH`` waiting connections; awaits only to
        pause after EMFILE."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = raw.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in _PEER_GONE:
                    continue
                log.warning("cannot accept connections: %s", error.strerror or error)
                await trio.sleep(ACCEPT_BACKOFF)
                return
            source = str(address[0]) if isinstance(address, tuple) else "unix"
            peer = _format_address(address)
            ticket = self.admission.try_begin_handshake(source)
            if ticket is None:
                with contextlib.suppress(OSError):  # a reset: no TIME_WAIT left behind
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                conn.close()
                self._shed(peer, source)
                continue
            nursery.start_soon(self._serve_accepted, conn, peer, ticket)

    def _shed(self, peer: str, source: str) -> None:
        reason = self.admission.last_shed
        # The source without its port: a flood's lines are alike, for the log's rate limit.
        why = reason.value if reason else "?"
        log.info("closed a connection from %s at once: %s", source, why)
        self._observer.connection_opened(peer)
        self._observer.handshake_finished(peer, HandshakeOutcome.SHED)
        self._observer.connection_closed(peer)

    async def _serve_accepted(
        self, conn: socket.socket, peer: str, ticket: HandshakeTicket
    ) -> None:
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        except BaseException as error:
            conn.close()
            self.admission.end_handshake(ticket)
            if isinstance(error, OSError):  # the client is gone already
                return
            raise
        await self._serve_connection(stream, peer, ticket)

    async def serve_connection(self, stream: trio.abc.Stream, peer: str | None = None) -> None:
        """Serve one connection until the peer leaves or this is cancelled;
        closes ``stream`` before returning, and every request task of the
        connection has ended by then. The admission's per-client cap applies;
        its handshake caps are for ``serve_on`` to apply.

        **Cancellation:** ends every request task of the connection."""
        await self._serve_connection(stream, peer or _peer_address(stream), None)

    async def _serve_connection(
        self, stream: trio.abc.Stream, peer: str, ticket: HandshakeTicket | None
    ) -> None:
        self.connections += 1
        self._observer.connection_opened(peer)
        try:
            async with stream:
                if self._ssl_context is None:
                    self._end_handshake(ticket)
                    await self._serve_admitted(stream, PeerContext(peer, Identity(), ""))
                    return
                try:
                    tls = await self._handshake(stream, peer)
                finally:
                    self._end_handshake(ticket)
                if tls is None:
                    return
                der = tls.getpeercert(binary_form=True) or b""
                context = PeerContext(peer, identity_from_der(der), hashlib.sha256(der).hexdigest())
                try:
                    await self._serve_admitted(tls, context)
                finally:
                    # close_notify, unless the peer does not read: closed anyway
                    with trio.move_on_after(1.0):
                        await tls.aclose()
        finally:
            self._end_handshake(ticket)  # (idempotent)
            self.connections -= 1
            self._counts_changed.unpark_all()
            self._observer.connection_closed(peer)

    def _end_handshake(self, ticket: HandshakeTicket | None) -> None:
        if ticket is not None:
            self.admission.end_handshake(ticket)

    async def _serve_admitted(self, stream: trio.abc.Stream, peer: PeerContext) -> None:
        """Serve ``peer`` unless its client already has its cap of connections."""
        lease = self.admission.try_admit(peer.identity)
        if lease is None:
            reason = self.admission.last_shed
            log.info(
                "closed a connection of %s at once: %s",
                peer.identity,
                reason.value if reason else "?",
            )
            return
        try:
            await self._serve_grpc(stream, peer)
        finally:
            self.admission.release(lease)

    async def _handshake(self, stream: trio.abc.Stream, peer: str) -> ServerTls | None:
        assert self._ssl_context is not None
        tls = ServerTls(stream, self._ssl_context)
        outcome = HandshakeOutcome.REFUSED
        try:
            with trio.move_on_after(self._config.handshake_timeout):
                await tls.do_handshake()
                outcome = HandshakeOutcome.OK
                return tls
            outcome = HandshakeOutcome.TIMED_OUT
            log.info("TLS handshake timed out")
        except trio.BrokenResourceError as error:
            # every failure here is the peer's: refuse and move on
            log.info("TLS handshake failed: %s", _handshake_reason(error))
        finally:
            self._observer.handshake_finished(peer, outcome)
        return None

    async def _serve_grpc(self, stream: trio.abc.Stream, peer: PeerContext) -> None:
        _peer.set(peer)
        core = GrpcConnection(
            Role.SERVER,
            max_receive_message=self._config.max_request_size,
            max_concurrent_streams=self._config.max_streams_per_connection,
        )
        connection = _Connection(core, stream, peer)
        requests = connection.requests
        self._live.add(connection)
        try:
            async with trio.open_nursery() as nursery:
                connection.on_broken = nursery.cancel_scope.cancel
                nursery.start_soon(connection.writer)
                connection.wake()
                if self._closing:
                    self._say_goodbye(connection)
                try:
                    await self._read(connection, requests, nursery, peer)
                finally:
                    # The client is gone: nobody will read what the handlers still have to say.
                    for request in requests.values():
                        request.scope.cancel()
                with trio.move_on_after(1.0):  # a GOAWAY, if one is queued
                    await connection.flush()
                nursery.cancel_scope.cancel()
        finally:
            self._live.discard(connection)

    async def _read(
        self,
        connection: _Connection,
        requests: dict[int, _Request],
        nursery: trio.Nursery,
        peer: PeerContext,
    ) -> None:
        """The connection's one reader: bytes in, events dispatched, until the
        peer leaves or breaks HTTP/2. Answers the non-blocking unary calls
        whose whole request came in one read; hands those still incomplete to
        tasks before it waits for more bytes."""
        core = connection.core
        waiting: list[_Request] = []
        """Calls to answer here, seen since the last read."""
        while True:
            try:
                event = core.next_event()
            except RemoteProtocolError as error:
                log.info("closing a connection that broke HTTP/2: %s", error)
                connection.wake()
                return
            if event is NEED_DATA:
                for pending in waiting:
                    if pending.answer is None:  # answered, or reset
                        continue
                    if pending.inbox:  # its message is in: what a task would answer at once
                        self._answer_now(connection, pending, requests, peer)
                    else:  # a task waits for the rest
                        pending.answer = None
                        nursery.start_soon(self._run_request, connection, pending, requests, peer)
                waiting.clear()
                connection.poke()
                if connection.broken:
                    return
                try:
                    data = await connection.stream.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                core.receive_data(bytes(data))
                continue
            if isinstance(event, RequestReceived):
                answer = self._nonblocking(event)
                new = requests[event.stream_id] = _Request(event, answer)
                if answer is None:
                    nursery.start_soon(self._run_request, connection, new, requests, peer)
                else:
                    waiting.append(new)
            elif isinstance(event, MessageReceived | StreamRejected):
                request = requests.get(event.stream_id)
                if request is not None:
                    request.inbox.append(event)
                    request.arrived.set()
                elif isinstance(event, MessageReceived):
                    core.acknowledge(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, RequestEnded):
                request = requests.get(event.stream_id)
                if request is not None:
                    request.inbox.append(None)
                    if request.answer is not None:
                        self._answer_now(connection, request, requests, peer)
                    else:
                        request.arrived.set()
            elif isinstance(event, StreamReset):
                request = requests.get(event.stream_id)
                if request is not None:
                    if request.answer is not None:  # reset before its request was whole
                        del requests[event.stream_id]
                        request.answer = None
                        self._finish(
                            request,
                            Status(StatusCode.CANCELLED, "the client cancelled the call"),
                            peer,
                            trio.current_time(),
                            time.time(),
                        )
                    request.scope.cancel()
            elif isinstance(event, RequestRefused):
                self._observer.call_finished(
                    CallRecord(
                        method=event.path,
                        peer=peer.address,
                        identity=peer.identity,
                        certificate_sha256=peer.certificate_sha256,
                        request=None,
                        code=event.status.code.name,
                        message=event.status.message,
                        started_at=time.time(),
                        duration=0.0,
                    )
                )
            elif isinstance(event, ConnectionClosed):
                if connection.closing:
                    await _drain(connection)
                return

    def _nonblocking(self, event: RequestReceived) -> NonBlockingUnary | None:
        """The handler that answers ``event``'s call without a task, if it has one."""
        service = self._services.get(event.service)
        if service is None:
            return None
        method = service.methods.get(event.method)
        if method is None:
            return None
        handler = method.method_fn
        return handler if isinstance(handler, NonBlockingUnary) else None

    def _answer_now(
        self,
        connection: _Connection,
        request: _Request,
        requests: dict[int, _Request],
        peer: PeerContext,
    ) -> None:
        """Answer a call on the reader, once its message (or its end) is in:
        the status (and the response) are queued and the call recorded, as
        ``_run_request`` would have. The reader wakes the writer before it
        waits for bytes again."""
        event = request.event
        handler = request.answer
        assert handler is not None
        request.answer = None
        del requests[event.stream_id]
        started_at = time.time()
        started = trio.current_time()
        status = Status(StatusCode.OK)
        if event.timeout is not None and event.timeout <= 0:
            status = _DEADLINE_EXCEEDED
        else:
            try:
                message = _take_message(connection, request, handler.request_type)
                if message is None:
                    raise InvalidRequest("the request has no message")
                response = handler.answer(message)
            except _Rejected as rejected:
                status = rejected.status
            except Exception as error:
                status = _status_for(error)
            else:
                if event.timeout is not None and trio.current_time() >= started + event.timeout:
                    status = _DEADLINE_EXCEEDED
                else:
                    connection.core.send_message(event.stream_id, response.SerializeToString())
        self._finish(request, status, peer, started, started_at)
        connection.core.send_status(event.stream_id, status)

    async def _run_request(
        self,
        connection: _Connection,
        request: _Request,
        requests: dict[int, _Request],
        peer: PeerContext,
    ) -> None:
        event = request.event
        started_at = time.time()
        started = trio.current_time()
        status = Status(StatusCode.CANCELLED, "the client cancelled the call")
        self.requests += 1
        self._counts_changed.unpark_all()
        try:
            with request.scope:
                status = await self._dispatch(connection, request)
                self._finish(request, status, peer, started, started_at)
                connection.core.send_status(event.stream_id, status)
                connection.wake()
        finally:
            if request.scope.cancelled_caught:
                if connection.closing:
                    status = _SHUTTING_DOWN
                self._finish(request, status, peer, started, started_at)
            requests.pop(event.stream_id, None)
            self.requests -= 1
            self._counts_changed.unpark_all()

    def _finish(
        self,
        request: _Request,
        status: Status,
        peer: PeerContext,
        started: float,
        started_at: float,
    ) -> None:
        self._observer.call_finished(
            CallRecord(
                method=request.event.path,
                peer=peer.address,
                identity=peer.identity,
                certificate_sha256=peer.certificate_sha256,
                request=request.first,
                code=status.code.name,
                message=status.message,
                started_at=started_at,
                duration=trio.current_time() - started,
            )
        )

    async def _dispatch(self, connection: _Connection, request: _Request) -> Status:
        """The status the call ends with, once its handler is done."""
        event = request.event
        service = self._services.get(event.service)
        method = service.methods.get(event.method) if service else None
        if method is None:
            return Status(StatusCode.UNIMPLEMENTED, f"unknown method {event.path}")
        deadline = math.inf if event.timeout is None else trio.current_time() + event.timeout
        with trio.CancelScope(deadline=deadline) as deadline_scope:
            try:
                await self._call(connection, request, method.method_fn, method.signature)
            except _Rejected as rejected:
                return rejected.status
            except Exception as error:
                return _status_for(error)
            return Status(StatusCode.OK)
        assert deadline_scope.cancelled_caught
        return _DEADLINE_EXCEEDED

    async def _call(
        self,
        connection: _Connection,
        request: _Request,
        method_fn: Callable[..., Any],
        signature: Any,
    ) -> None:
        stream_id = request.event.stream_id
        cardinality = signature.cardinality
        if cardinality in (Cardinality.UNARY_UNARY, Cardinality.UNARY_STREAM):
            argument: Any = await _single_message(connection, request, signature.request_type)
        else:
            argument = _messages(connection, request, signature.request_type)
        if cardinality in (Cardinality.UNARY_UNARY, Cardinality.STREAM_UNARY):
            response = await method_fn(argument, request=request.event)
            # Queued with the status that follows: one write for the whole answer.
            connection.core.send_message(stream_id, response.SerializeToString())
            return
        connection.core.send_headers(stream_id)  # a streaming client may wait for them
        connection.wake()
        responses = method_fn(argument, request=request.event)
        try:
            async for response in responses:
                await _send(connection, stream_id, response)
        finally:
            await responses.aclose()


async def _drain(connection: _Connection) -> None:
    """Once the GOAWAY is written, read and drop what the peer still sends
    until it closes its side (or the stream breaks).

    **Cancellation:** safe; nothing more is read."""
    await connection.flush()
    while not connection.broken:
        try:
            if not await connection.stream.receive_some():
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _send(connection: _Connection, stream_id: int, response: Any) -> None:
    """Queue one response and return once it reached the stream.

    **Cancellation:** the message may be partly sent; the stream is then
    reset or ended by the caller, so the peer never takes half a message as whole."""
    if isinstance(response, FramedMessage):
        connection.core.send_message(stream_id, response, framed=True)
    else:
        connection.core.send_message(stream_id, response.SerializeToString())
    connection.wake()
    await connection.drained(stream_id)


async def _next_message(
    connection: _Connection, request: _Request, message_type: Any
) -> Message | None:
    """The next request message, decoded, or None at the end of the request."""
    while not request.inbox:
        request.arrived = trio.Event()
        await request.arrived.wait()
    message = _take_message(connection, request, message_type)
    connection.poke()  # a WINDOW_UPDATE may be due
    return message


def _take_message(connection: _Connection, request: _Request, message_type: Any) -> Message | None:
    """The first request message of the inbox (not empty), decoded, or None
    at the end of the request; its flow-control credit is given back (the
    caller wakes the writer)."""
    item = request.inbox.pop(0)
    if item is None:
        request.inbox.append(None)  # the end stays the end
        return None
    if isinstance(item, StreamRejected):
        raise _Rejected(item.status)
    connection.core.acknowledge(item.stream_id, item.flow_controlled_length)
    try:
        message: Message = message_type.FromString(item.data)
    except DecodeError:
        raise InvalidRequest(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"
        ) from None
    if request.first is None:
        request.first = message
    return message


async def _single_message(connection: _Connection, request: _Request, message_type: Any) -> Any:
    message = await _next_message(connection, request, message_type)
    if message is None:
        raise InvalidRequest("the request has no message")
    return message


async def _messages(
    connection: _Connection, request: _Request, message_type: Any
) -> AsyncIterator[Any]:
    while (message := await _next_message(connection, request, message_type)) is not None:
        yield message


def _status_for(error: Exception) -> Status:
    return status_for_exception(error)  # the one class-to-code table


_DEADLINE_EXCEEDED = Status(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
_SHUTTING_DOWN = Status(StatusCode.CANCELLED, "the daemon is shutting down")

_NO_CAPS = AdmissionLimits(
    max_handshakes=None,
    max_handshakes_per_source=None,
    max_connections_per_client=None,
    fd_reserve=0,
)


def _peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return type(stream).__name__
    try:
        address = sock.getpeername()
    except OSError:
        return "unknown"
    return _format_address(address)


def _format_address(address: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address; a Unix socket's path."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) or "unix"


def _source_of(peer: str) -> str:
    """The host part of ``_format_address``'s result (the whole of anything else)."""
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return peer
    return host[1:-1] if host.startswith("[") else host


def _handshake_reason(error: BaseException) -> str:
    cause = error.__cause__ or error.__context__ or error
    return str(cause) or type(cause).__name__

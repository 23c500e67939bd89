"""The client side on anyio: ``Channel`` makes calls on one connection,
driving one ``GrpcConnection``.

anyio, so that the CLI runs on asyncio (a one-shot command starts faster
without importing trio) while tests run the same code under trio, over
memory streams and a mock clock.

One reader task (the only caller of ``next_event``) and one writer task (the
only caller of ``send_all``) per connection. When the connection ends, every
call still open ends with ``ConnectionFailed`` naming why; the channel knows
it, no error text is parsed. Every I/O error is mapped once, at the
boundary (``map_exceptions``).
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

from rund_trio.errors import ResourceExhausted, RpcError, sole_exception
from rund_trio.rpc._core import GrpcConnection, Role
from rund_trio.rpc._errors import LocalProtocolError, RemoteProtocolError
from rund_trio.rpc._events import (
    NEED_DATA,
    ConnectionClosed,
    MessageReceived,
    ResponseEnded,
)
from rund_trio.rpc._failures import (
    REFUSED_AT_ONCE,
    Stage,
    TransportFailed,
    describe_connection_error,
    handshake_failed,
    map_exceptions,
    not_http2,
)
from rund_trio.rpc._failures import io_errors as _io_errors
from rund_trio.rpc._status import Status, StatusCode
from rund_trio.rpc._tls import ByteStream, ClientTls

__all__ = [
    "Call",
    "Channel",
    "Stage",
    "TransportFailed",
    "describe_connection_error",
    "map_exceptions",
    "open_channel",
    "open_stream_channel",
]

T = TypeVar("T")

MAX_RESPONSE_MESSAGE = 4 * 1024 * 1024


class _AnyioTransport:
    """An anyio byte stream in trio's stream shape."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send(bytes(data) if not isinstance(data, bytes) else data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._stream.receive(max_bytes or 256 * 1024)
        except anyio.EndOfStream:
            return b""

    async def aclose(self) -> None:
        await self._stream.aclose()


class Call(Generic[T]):
    """One call on a channel: send request messages, then receive responses.

    Messages are decoded with ``decode``. ``receive`` raises ``RpcError`` for
    a status other than OK and ``ConnectionFailed`` if the connection ended.
    """

    def __init__(self, channel: Channel, stream_id: int, decode: Callable[[bytes], T]) -> None:
        self._channel = channel
        self.stream_id = stream_id
        self._decode = decode
        self._inbox: deque[MessageReceived] = deque()
        self._arrived = anyio.Event()
        self.status: Status | None = None
        self._lost: str | None = None

    def _deliver(self, event: MessageReceived | ResponseEnded | None, lost: str = "") -> None:
        if isinstance(event, MessageReceived):
            self._inbox.append(event)
        elif isinstance(event, ResponseEnded):
            self.status = event.status
        else:
            self._lost = lost
        self._arrived.set()

    @property
    def done(self) -> bool:
        return self.status is not None or self._lost is not None

    async def send(self, message: Any, *, framed: bool = False) -> None:
        """Send one request message; returns once it reached the connection,
        so a peer that does not read holds the sender back (flow control).
        ``framed``: ``message`` is bytes already carrying the 5-byte gRPC
        prefix, sent as they are without another copy.

        **Cancellation:** the message may have been partly sent: abandon the call."""
        if self.done:
            # Answered already: receive() says how. Still a checkpoint, so a
            # sender looping over this is cancellable.
            await anyio.lowlevel.checkpoint()
            return
        channel = self._channel
        data = message if framed else message.SerializeToString()
        channel.core.send_message(self.stream_id, data, framed=framed)
        channel.wake()
        await channel.drained(self.stream_id)

    def send_last(self, message: Any) -> None:
        """Queue the request's last message and its end (never suspends): for
        a single request, so that it goes out in one write with its headers."""
        if not self.done:
            self._channel.core.send_message(self.stream_id, message.SerializeToString())
        self.end()

    def end(self) -> None:
        """The request is complete (queued; never suspends)."""
        self._channel.core.end_request(self.stream_id)
        self._channel.wake()

    async def receive(self) -> T | None:
        """The next response message, or None once the call ended with OK."""
        while not self._inbox:
            if self._lost is not None:
                raise self._channel.lost_error()
            if self.status is not None:
                if self.status.code is StatusCode.OK:
                    return None
                raise RpcError(self.status.code.name, self.status.message)
            self._arrived = anyio.Event()
            await self._arrived.wait()
        event = self._inbox.popleft()
        self._channel.core.acknowledge(self.stream_id, event.flow_controlled_length)
        self._channel.wake()
        return self._decode(event.data)

    def abandon(self) -> None:
        """Reset the call if its answer did not end (the caller stopped
        reading): the daemon ends its side and frees the stream at once.
        Never suspends, so it is safe where a generator is being closed."""
        if not self.done:
            self._channel.core.reset_stream(self.stream_id)
            self._channel.wake()
        self._channel.forget(self.stream_id)


class Channel:
    """A gRPC client connection. Use ``open_channel`` or ``open_stream_channel``."""

    def __init__(self, transport: ByteStream) -> None:
        self.core = GrpcConnection(Role.CLIENT, max_receive_message=MAX_RESPONSE_MESSAGE)
        self._transport = transport
        self._calls: dict[int, Call[Any]] = {}
        self._queued = 0
        self._written = 0
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._lost: str | None = None
        self._lost_cause: BaseException | None = None
        self._answered = False
        self._heard = False

    # ---------------------------------------------------------------- calls

    def start(
        self,
        service: str,
        method: str,
        decode: Callable[[bytes], T],
        *,
        timeout: float | None = None,
        wake: bool = True,
    ) -> Call[T]:
        """Open a call (never suspends). ``wake=False``: its headers wait for
        the next thing sent on it, to go out in the same write.

        Raises:
            ConnectionFailed: the connection is over.
            ResourceExhausted: the daemon's cap on calls per connection is reached.
        """
        if self._lost is not None:
            raise self.lost_error()
        try:
            stream_id = self.core.start_request(service, method, timeout=timeout)
        except LocalProtocolError as error:
            if error.status.code is StatusCode.RESOURCE_EXHAUSTED:
                raise ResourceExhausted(str(error)) from None
            raise TransportFailed(
                f"connection lost: {error}",
                stage=Stage.CONNECTION,
                peer_answered=self._heard,
            ) from None
        call = self._calls[stream_id] = Call(self, stream_id, decode)
        if wake:
            self.wake()
        return call

    @property
    def peer_answered(self) -> bool:
        """Whether the peer sent anything on this connection after the TLS
        handshake (a server sends its HTTP/2 settings at once)."""
        return self._heard

    def lost_error(self) -> TransportFailed:
        """The error for a call on this connection once it ended."""
        return TransportFailed(
            f"connection lost: {self._lost}",
            stage=Stage.CONNECTION,
            cause=self._lost_cause,
            peer_answered=self._heard,
        )

    def forget(self, stream_id: int) -> None:
        self._calls.pop(stream_id, None)

    async def unary_unary(
        self,
        service: str,
        method: str,
        request: Any,
        decode: Callable[[bytes], T],
        *,
        timeout: float | None = None,
    ) -> T:
        """One request, one response.

        **Cancellation:** the call is reset (RST_STREAM); the daemon ends its
        side at once and the connection serves on."""
        call = self.start(service, method, decode, timeout=timeout, wake=False)
        try:
            call.send_last(request)  # headers, message and end in one write
            response = await call.receive()
            if response is None:
                raise RpcError("INTERNAL", "the daemon answered OK without a message")
            while await call.receive() is not None:  # the status ends it
                pass
            return response
        finally:
            call.abandon()

    async def unary_stream(
        self,
        service: str,
        method: str,
        request: Any,
        decode: Callable[[bytes], T],
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[T, None]:
        """One request, then responses until the call ends.

        **Ordering:** responses come in the order the daemon sent them.
        **Cancellation:** closing the iterator early (or cancelling it) resets
        the call; the daemon ends its side at once."""
        call = self.start(service, method, decode, timeout=timeout, wake=False)
        try:
            call.send_last(request)
            while (response := await call.receive()) is not None:
                yield response
        finally:
            call.abandon()

    # ---------------------------------------------------------- connection

    def wake(self) -> None:
        self._queued += 1
        self._wake.set()
        self._progress.set()

    async def drained(self, stream_id: int) -> None:
        """Return once what was queued on ``stream_id`` reached the transport
        (or the connection ended)."""
        while self.core.pending(stream_id) and self._lost is None:
            await self._park()
        target = self._queued
        while self._written < target and self._lost is None:
            await self._park()

    async def _park(self) -> None:
        self._progress = anyio.Event()
        await self._progress.wait()

    async def _writer(self) -> None:
        try:
            while True:
                seen = self._queued
                data = self.core.data_to_send()
                if data:
                    await self._transport.send_all(data)
                    self._written = seen
                    self._progress.set()
                    continue
                self._written = seen
                self._progress.set()
                self._wake = anyio.Event()
                if self._queued == seen:
                    await self._wake.wait()
        except _io_errors() as error:
            self._end(describe_connection_error(error), error)

    async def _reader(self) -> None:
        core = self.core
        try:
            while True:
                try:
                    event = core.next_event()
                except RemoteProtocolError as error:
                    self.wake()
                    self._end(f"the daemon broke HTTP/2: {error}", error)
                    return
                if event is NEED_DATA:
                    self.wake()
                    data = await self._transport.receive_some()
                    self._heard = self._heard or bool(data)
                    core.receive_data(data)
                    continue
                if isinstance(event, MessageReceived | ResponseEnded):
                    self._answered = True
                    call = self._calls.get(event.stream_id)
                    if call is not None:
                        call._deliver(event)
                    elif isinstance(event, MessageReceived):
                        core.acknowledge(event.stream_id, event.flow_controlled_length)
                    if isinstance(event, ResponseEnded):
                        self._calls.pop(event.stream_id, None)
                elif isinstance(event, ConnectionClosed):
                    reason = event.reason
                    if not event.error and not self._answered:
                        reason = REFUSED_AT_ONCE
                    self._end(reason)
                    return
        except _io_errors() as error:
            self._end(describe_connection_error(error), error)

    def _end(self, reason: str, cause: BaseException | None = None) -> None:
        if self._lost is None:
            self._lost = reason
            self._lost_cause = cause
        for call in self._calls.values():
            call._deliver(None, self._lost)
        self._calls.clear()
        self._progress.set()
        self._wake.set()

    async def _close(self) -> None:
        """Say goodbye (GOAWAY) and let the writer send what is queued, briefly."""
        if self._lost is None:
            self.core.close()
            self.wake()
            with anyio.move_on_after(1):
                target = self._queued
                while self._written < target and self._lost is None:
                    await self._park()


@asynccontextmanager
async def open_stream_channel(transport: ByteStream) -> AsyncIterator[Channel]:
    """Speak gRPC over ``transport`` (TLS already on it, or not needed); the
    transport is closed on exit, whatever happens in the block.

    **Cancellation:** cancelling the block ends every call; the transport is closed."""
    channel = Channel(transport)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(channel._reader)
            tasks.start_soon(channel._writer)
            try:
                yield channel
            finally:
                with anyio.CancelScope(shield=True):
                    await channel._close()
                tasks.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the task group wraps whatever the caller's block raised
        raise sole_exception(group) from None
    finally:
        with anyio.CancelScope(shield=True):
            with suppress(*_io_errors()):
                await transport.aclose()


@asynccontextmanager
async def open_channel(
    host: str, port: int, ssl_context: ssl.SSLContext, *, transport: ByteStream | None = None
) -> AsyncIterator[Channel]:
    """Connect to ``host:port`` over TLS (or TLS over ``transport``, when
    given) and speak gRPC; the connection is closed on exit.

    Raises:
        TransportFailed: the daemon cannot be reached, the TLS handshake
            fails, or the server does not agree to HTTP/2 (ALPN ``h2``).
    """
    addr = f"{host}:{port}"
    with map_exceptions(f"cannot connect to {addr}"):
        if transport is None:
            transport = _AnyioTransport(await anyio.connect_tcp(host, port))
    tls = ClientTls(transport, ssl_context, server_hostname=host)
    try:
        await tls.handshake()
    except anyio.EndOfStream as error:
        await _close_quietly(tls)
        raise TransportFailed(
            f"cannot connect to {addr}: the daemon closed the connection during the "
            "TLS handshake (it accepts TLS 1.3 clients with a certificate from its CA)",
            stage=Stage.CONNECT,
            cause=error,
        ) from None
    except BaseException as error:
        await _close_quietly(tls)
        if isinstance(error, _io_errors()):
            raise handshake_failed(addr, error) from None
        raise
    if tls.alpn_protocol != "h2":
        # Not HTTP/2: gRPC cannot be spoken (waiting for its settings would hang).
        await _close_quietly(tls)
        raise not_http2(addr, tls.alpn_protocol)
    async with open_stream_channel(tls) as channel:
        yield channel


async def _close_quietly(tls: ClientTls) -> None:
    with anyio.CancelScope(shield=True):
        with suppress(*_io_errors()):
            await tls.aclose()

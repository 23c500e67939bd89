"""``BlockingChannel``: unary calls, one at a time, with blocking socket I/O
and no event loop, driving the same ``GrpcConnection`` as ``Channel``.

For a process that makes a few unary calls and exits (``rund-trio client
status``): it imports no anyio, asyncio or trio, resolves no name in a
thread, does the TLS handshake inside OpenSSL on the socket (no memory BIOs)
and leaves without waiting for the daemon to close. Its failures are the same
``TransportFailed`` facts ``Channel`` reports (``rund_trio.rpc._failures``),
so a caller explains them alike.

``unary_unary`` is a coroutine function, as ``Channel.unary_unary`` is, so
that code written against a channel runs on either; on this one it never
suspends (it blocks the thread until the answer), so it completes in a single
``send(None)``: see ``run_without_loop``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from rund_trio.errors import ResourceExhausted, RpcError
from rund_trio.rpc._core import GrpcConnection, Role
from rund_trio.rpc._errors import LocalProtocolError, RemoteProtocolError
from rund_trio.rpc._events import NEED_DATA, ConnectionClosed, MessageReceived, ResponseEnded
from rund_trio.rpc._failures import (
    REFUSED_AT_ONCE,
    Stage,
    TransportFailed,
    describe_connection_error,
    handshake_failed,
    not_http2,
)
from rund_trio.rpc._status import StatusCode

__all__ = ["BlockingChannel", "open_blocking_channel", "run_without_loop"]

T = TypeVar("T")

MAX_RESPONSE_MESSAGE = 4 * 1024 * 1024
_RECEIVE = 256 * 1024


class BlockingChannel:
    """A gRPC client connection for unary calls, one at a time, on a
    connected TLS socket. Use ``open_blocking_channel``."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.core = GrpcConnection(Role.CLIENT, max_receive_message=MAX_RESPONSE_MESSAGE)
        self._sock = sock
        self._heard = False
        self._answered = False
        self._lost: TransportFailed | None = None

    @property
    def peer_answered(self) -> bool:
        """Whether the peer sent anything on this connection after the TLS handshake."""
        return self._heard

    async def unary_unary(
        self,
        service: str,
        method: str,
        request: Any,
        decode: Callable[[bytes], T],
        *,
        timeout: float | None = None,
    ) -> T:
        """One request, one response, as ``Channel.unary_unary``; never
        suspends (the thread blocks until the answer).

        Raises:
            RpcError: the daemon answered with a status other than OK.
            TransportFailed: the connection ended (``Stage.CONNECTION``).
            ResourceExhausted: the daemon's cap on calls per connection is reached.
        """
        return self.call(service, method, request, decode, timeout=timeout)

    def call(
        self,
        service: str,
        method: str,
        request: Any,
        decode: Callable[[bytes], T],
        *,
        timeout: float | None = None,
    ) -> T:
        """``unary_unary`` as a plain function."""
        if self._lost is not None:
            raise self._lost
        core = self.core
        try:
            stream_id = core.start_request(service, method, timeout=timeout)
        except LocalProtocolError as error:
            if error.status.code is StatusCode.RESOURCE_EXHAUSTED:
                raise ResourceExhausted(str(error)) from None
            raise self._lose(str(error)) from None
        core.send_message(stream_id, request.SerializeToString())
        core.end_request(stream_id)
        answer: bytes | None = None
        while True:
            try:
                event = core.next_event()
            except RemoteProtocolError as error:
                self._send_pending()
                raise self._lose(f"the daemon broke HTTP/2: {error}", error) from None
            if event is NEED_DATA:
                self._send_pending()
                core.receive_data(self._receive())
            elif isinstance(event, MessageReceived):
                self._answered = True
                if event.stream_id == stream_id and answer is None:
                    answer = event.data
                core.acknowledge(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, ResponseEnded):
                self._answered = True
                if event.stream_id == stream_id:
                    status = event.status
                    break
            elif isinstance(event, ConnectionClosed):
                reason = event.reason
                if not event.error and not self._answered:
                    reason = REFUSED_AT_ONCE
                raise self._lose(reason)
        if status.code is not StatusCode.OK:
            raise RpcError(status.code.name, status.message)
        if answer is None:
            raise RpcError("INTERNAL", "the daemon answered OK without a message")
        return decode(answer)

    def _send_pending(self) -> None:
        data = self.core.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError as error:
                raise self._lose(describe_connection_error(error), error) from None

    def _receive(self) -> bytes:
        try:
            data = self._sock.recv(_RECEIVE)
        except OSError as error:
            raise self._lose(describe_connection_error(error), error) from None
        self._heard = self._heard or bool(data)
        return data

    def _lose(self, reason: str, cause: BaseException | None = None) -> TransportFailed:
        if self._lost is None:
            self._lost = TransportFailed(
                f"connection lost: {reason}",
                stage=Stage.CONNECTION,
                cause=cause,
                peer_answered=self._heard,
            )
        return self._lost

    def close(self) -> None:
        """Say goodbye (GOAWAY and TLS close_notify, if the connection still
        stands) and close the socket, without waiting for the daemon's answer."""
        try:
            if self._lost is None:
                self.core.close()
                self._sock.settimeout(0)  # nothing here waits for the peer
                with contextlib.suppress(OSError):
                    self._sock.sendall(self.core.data_to_send())
                    self._sock.unwrap()  # sends close_notify; its answer is not awaited
        finally:
            self._sock.close()


def _connect(host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port``: a literal address is connected to
    directly, a name resolved here (each of its addresses tried in turn)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((host, port))


@contextlib.contextmanager
def open_blocking_channel(
    host: str, port: int, ssl_context: ssl.SSLContext
) -> Iterator[BlockingChannel]:
    """Connect to ``host:port`` over TLS and speak gRPC, blocking; the
    connection is closed on exit (see ``BlockingChannel.close``).

    Raises:
        TransportFailed: the daemon cannot be reached, the TLS handshake
            fails, or the server does not agree to HTTP/2 (ALPN ``h2``).
    """
    addr = f"{host}:{port}"
    try:
        sock = _connect(host, port)
    except OSError as error:
        raise TransportFailed(
            f"cannot connect to {addr}: {describe_connection_error(error)}",
            stage=Stage.CONNECT,
            cause=error,
        ) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # An ASCII name given as bytes is used as it is; as str, ssl runs it
        # through the IDNA codec, whose import costs more than this whole call.
        hostname: str | bytes = host.encode("ascii") if host.isascii() else host
        tls = ssl_context.wrap_socket(sock, server_hostname=hostname)
    except OSError as error:
        sock.close()
        raise handshake_failed(addr, error) from None
    except BaseException:
        sock.close()
        raise
    alpn = tls.selected_alpn_protocol()
    if alpn != "h2":
        tls.close()
        raise not_http2(addr, alpn)
    channel = BlockingChannel(tls)
    try:
        yield channel
    finally:
        channel.close()


def run_without_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its awaits are all on a
    ``BlockingChannel``) to its end, without an event loop.

    Raises:
        RuntimeError: it did suspend: it needs an event loop (a bug: it
            awaited something other than a blocking channel's calls).
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a coroutine run without an event loop suspended")

"""The metrics endpoint: ``GET /metrics`` over plain HTTP/1.1, or over the
daemon's mutual TLS, on the daemon's own event loop.

It is built to be harmless to the daemon whatever a client sends: HTTP is
parsed by h11 with the request head capped at ``MAX_HEAD_BYTES``; a client
has ``REQUEST_TIMEOUT`` seconds to send it (and to finish a TLS handshake);
at most ``MAX_CONNECTIONS`` are served at once and more are closed at once;
every connection carries one request and is closed after the answer.
Metrics are rendered on the event loop itself, so collectors read the
daemon's state without locks.
"""

from __future__ import annotations

import logging
import ssl

import anyio
import anyio.abc
import h11
import trio
from anyio.streams.tls import TLSStream
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from rund_trio.errors import ConfigError
from rund_trio.server.address import parse_address

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
READ_SIZE = 16 * 1024
LINGER_TIME = 1.0
LINGER_BYTES = 2 * 1024 * 1024
"""After an answer, what of a request's excess is read and dropped before
closing: closing with unread data would reset the connection and could
destroy the answer before the client reads it."""
PATH = b"/metrics"


async def open_metrics_listener(addr: str) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    """Bind ``addr`` (``host:port``); ConfigError when it cannot be bound."""
    host, port = parse_address(addr, default_host=None)
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        raise ConfigError(
            f"cannot listen for metrics on {addr}: {error.strerror or error}"
        ) from None


class MetricsServer:
    """Serves ``registry`` on a listener the caller binds (and closes)."""

    def __init__(self, registry: CollectorRegistry, ssl_context: ssl.SSLContext | None) -> None:
        self._registry = registry
        self._ssl_context = ssl_context
        self.connections = 0

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Accept scrapes until cancelled; cancellation ends every connection."""
        await listener.serve(self._handle)

    async def _handle(self, tcp: anyio.abc.SocketStream) -> None:
        async with tcp:
            if self.connections >= MAX_CONNECTIONS:
                return
            self.connections += 1
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await self._serve_one(tcp)
                with trio.move_on_after(LINGER_TIME):
                    await _linger(tcp)
            except (anyio.BrokenResourceError, anyio.EndOfStream, OSError, ssl.SSLError) as error:
                log.debug("metrics connection ended: %r", error)
            except Exception as error:  # never let one scrape end the daemon
                log.warning("metrics connection ended by an error: %r", error)
            finally:
                self.connections -= 1

    async def _serve_one(self, tcp: anyio.abc.SocketStream) -> None:
        if self._ssl_context is None:
            await self._answer(tcp)
            return
        tls = await TLSStream.wrap(
            tcp, server_side=True, ssl_context=self._ssl_context, standard_compatible=False
        )
        await self._answer(tls)
        await tls.unwrap()  # close_notify: the answer is complete

    async def _answer(self, stream: anyio.abc.ByteStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            request = await _next_request(stream, connection)
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint
            await _send(stream, connection, status, b"bad request\n", b"text/plain")
            return
        if request is None:
            return
        if request.method not in (b"GET", b"HEAD"):
            await _send(stream, connection, 405, b"only GET\n", b"text/plain", request)
            return
        if request.target.split(b"?")[0] != PATH:
            await _send(
                stream, connection, 404, b"metrics are at /metrics\n", b"text/plain", request
            )
            return
        accept = dict(request.headers).get(b"accept", b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(self._registry)
        except Exception:  # a bug in a collector: say so, and keep serving jobs
            log.exception("cannot render the metrics")
            body = b"internal error (see the daemon's log)\n"
            await _send(stream, connection, 500, body, b"text/plain", request)
            return
        await _send(stream, connection, 200, body, content_type.encode(), request)


async def _linger(tcp: anyio.abc.SocketStream) -> None:
    await tcp.send_eof()
    dropped = 0
    while dropped < LINGER_BYTES:
        try:
            dropped += len(await tcp.receive(READ_SIZE))
        except anyio.EndOfStream:
            return


async def _next_request(
    stream: anyio.abc.ByteStream, connection: h11.Connection
) -> h11.Request | None:
    """The request's head; None when the client closed before sending one."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                data = b""
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            return event
        return None


async def _send(
    stream: anyio.abc.ByteStream,
    connection: h11.Connection,
    status: int,
    body: bytes,
    content_type: bytes,
    request: h11.Request | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await stream.send(connection.send(h11.Response(status_code=status, headers=headers)))
    if request is None or request.method != b"HEAD":
        await stream.send(connection.send(h11.Data(data=body)))
    await stream.send(connection.send(h11.EndOfMessage()))

"""A raw HTTP/2 client over TLS for sending the daemon what no real gRPC
client would: malformed gRPC framing, wrong headers, garbage, too many streams.

It uses ``h2`` (a purerpc dependency) for the HTTP/2 framing and writes every
gRPC-level byte itself."""

from __future__ import annotations

import ssl
import struct
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import trio

SERVICE = "rund.JobController"


def grpc_message(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message; ``length`` overrides the real length."""
    return struct.pack(">?I", compressed, len(payload) if length is None else length) + payload


def request_headers(
    method: str = "Status",
    *,
    service: str = SERVICE,
    content_type: str = "application/grpc+proto",
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", f"/{service}/{method}"),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", content_type),
        *extra,
    ]


@dataclass
class Answer:
    """What the daemon sent on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset_code: int | None = None

    @property
    def grpc_status(self) -> int:
        """grpc-status from the trailers (or a trailers-only answer's headers)."""
        return int((self.trailers or self.headers)["grpc-status"])

    @property
    def grpc_message(self) -> str:
        return urllib.parse.unquote((self.trailers or self.headers).get("grpc-message", ""))


class UnlimitedStreamsConnection(h2.connection.H2Connection):  # type: ignore[misc]
    """An h2 client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


class RawH2Client:
    def __init__(self, stream: trio.SSLStream[trio.SocketStream], *, obey_limits: bool) -> None:
        self._stream = stream
        factory = h2.connection.H2Connection if obey_limits else UnlimitedStreamsConnection
        self.h2 = factory(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.answers: dict[int, Answer] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.settings_received = False

    async def send_raw(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self._stream.send_all(data)

    async def open(self) -> None:
        self.h2.initiate_connection()
        await self.flush()
        while not self.settings_received and not self.closed:
            await self.receive_some()

    async def request(
        self,
        body: bytes | None,
        *,
        headers: Sequence[tuple[str, str]] | None = None,
        end_stream: bool = True,
    ) -> int:
        """Open a stream with ``headers``, send ``body`` (if any), and end the
        stream if ``end_stream``; the stream's id."""
        stream_id: int = self.h2.get_next_available_stream_id()
        self.answers[stream_id] = Answer()
        only_headers = body is None and end_stream
        self.h2.send_headers(stream_id, headers or request_headers(), end_stream=only_headers)
        if body is not None:
            self.h2.send_data(stream_id, body, end_stream=end_stream)
        await self.flush()
        return stream_id

    async def receive_some(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            self._record(event)
        await self.flush()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, h2.events.ResponseReceived):
            self.answers[event.stream_id].headers = dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.answers[event.stream_id].trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.answers[event.stream_id].data += event.data
        elif isinstance(event, h2.events.StreamEnded):
            self.answers[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.answers[event.stream_id].reset_code = event.error_code

    async def answer(self, stream_id: int) -> Answer:
        """The stream's answer, once the daemon has ended (or reset) it."""
        answer = self.answers[stream_id]
        with trio.fail_after(10):
            while not (answer.ended or answer.reset_code is not None):
                if self.closed:
                    raise AssertionError(f"the connection closed before stream {stream_id} ended")
                await self.receive_some()
        return answer

    async def until_closed(self) -> None:
        """Read (and discard) until the daemon closes the connection."""
        while not self.closed:
            try:
                await self.receive_some()
            except (trio.BrokenResourceError, h2.exceptions.ProtocolError):
                self.closed = True


@asynccontextmanager
async def raw_connection(
    port: int, ssl_context: ssl.SSLContext, *, obey_limits: bool = True, preface: bool = True
) -> AsyncIterator[RawH2Client]:
    """A TLS connection to the daemon on 127.0.0.1:``port`` with an HTTP/2
    client on it (its preface and SETTINGS exchanged if ``preface``)."""
    ssl_context.set_alpn_protocols(["h2"])
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    async with trio.SSLStream(tcp, ssl_context, server_hostname="localhost") as tls:
        await tls.do_handshake()
        client = RawH2Client(tls, obey_limits=obey_limits)
        if preface:
            await client.open()
        yield client

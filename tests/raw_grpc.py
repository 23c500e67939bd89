"""A gRPC client reduced to its wire bytes, for tests that must behave as no
well-mannered client does: reset a connection mid-request, or open a large
flow-control window and then not read."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
from google.protobuf.message import Message

from tests.conftest import Daemon

MAX_WINDOW = 2**31 - 1


def raw_call(
    method: str,
    message: Message,
    *,
    window: int | None = None,
    header_table_size: int | None = None,
    service: str = "rund.JobController",
) -> tuple[h2.connection.H2Connection, bytes]:
    """What a gRPC client sends for one call of ``method`` on a new HTTP/2
    connection (the preface, the request headers, the message, ending the
    stream), and the client's HTTP/2 state to read the answer with. With
    ``window``, the client lets the daemon send that many bytes unread; with
    ``header_table_size``, it announces that HPACK table size."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    if window is not None:
        connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        connection.increment_flow_control_window(window - connection.inbound_flow_control_window)
    if header_table_size is not None:
        connection.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: header_table_size})
    connection.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/{service}/{method}"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    body = message.SerializeToString()
    connection.send_data(1, b"\0" + len(body).to_bytes(4, "big") + body, end_stream=True)
    return connection, connection.data_to_send()


def raw_request(method: str, message: Message) -> bytes:
    return raw_call(method, message)[1]


@dataclass
class RawTls:
    """A client's TLS connection that reads only when told to."""

    tcp: trio.SocketStream
    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO

    @classmethod
    async def connect(
        cls, daemon: Daemon, context: ssl.SSLContext, session: ssl.SSLSession | None = None
    ) -> RawTls:
        """Handshake, resuming ``session`` if given (as gRPC clients do: it
        spares both sides the certificate signatures)."""
        tcp = await trio.open_tcp_stream("127.0.0.1", daemon.port)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost", session=session)
        connection = cls(tcp, tls, incoming, outgoing)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await tcp.send_all(outgoing.read())
                await connection._receive()
        await tcp.send_all(outgoing.read())
        return connection

    async def _receive(self) -> None:
        data = await self.tcp.receive_some()
        assert data, "the daemon closed the connection"
        self.incoming.write(data)

    async def ticket(self) -> ssl.SSLSession:
        """A session to resume later, from the ticket the daemon sends."""
        while (session := self.tls.session) is None or not session.has_ticket:
            await self._receive()
            with contextlib.suppress(ssl.SSLWantReadError):
                self.tls.read(1)
        return session

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self.tcp.send_all(self.outgoing.read())

    async def responses(self, connection: h2.connection.H2Connection) -> list[bytes]:
        """Read the answer to the call ``connection`` sent, to the end of its
        stream: its messages, serialized."""
        body = bytearray()
        while True:
            try:
                plain = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                await self._receive()
                continue
            for event in connection.receive_data(plain):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return _messages(bytes(body))

    async def reset(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST and drops what is unread."""
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.tcp.aclose()


def _messages(body: bytes) -> list[bytes]:
    """gRPC's length-prefixed messages (uncompressed)."""
    messages, offset = [], 0
    while offset < len(body):
        compressed, length = body[offset], int.from_bytes(body[offset + 1 : offset + 5], "big")
        assert not compressed
        messages.append(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
    return messages


@dataclass
class FrameReader:
    """The frames of a server's bytes, split by hand (no HTTP/2 state that
    could object to what a server may send after a GOAWAY), as names:
    ``HEADERS``, ``DATA``, ``RST_STREAM:<code>``, ``GOAWAY:<code>``..."""

    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        names = []
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, payload = self.buffer[3], bytes(self.buffer[9 : 9 + length])
            del self.buffer[: 9 + length]
            name = _FRAME_NAMES.get(kind, str(kind))
            if kind == 0x3:  # RST_STREAM: the error code
                name += f":{int.from_bytes(payload[:4], 'big')}"
            elif kind == 0x7:  # GOAWAY: last stream id, then the error code
                name += f":{int.from_bytes(payload[4:8], 'big')}"
            names.append(name)
        return names


_FRAME_NAMES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
}

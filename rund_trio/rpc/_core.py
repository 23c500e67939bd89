"""``GrpcConnection``: gRPC over HTTP/2 as bytes and events, no I/O (sans-I/O).

Shaped like h11's ``Connection``: ``receive_data`` only buffers,
``next_event`` parses one event at a time (``NEED_DATA`` when it needs
bytes), the ``send_*`` methods only queue, and ``data_to_send`` hands over
what to write. The HTTP/2 state machine is h2's ``H2Connection``, driven
through its public API alone.

Reading is linear in the bytes: the bytes received are kept in one
``bytearray`` and h2 is given one whole frame at a time (the frame header
says how long it is), so neither this buffer nor h2's ever grows past one
frame, however the frame was split across reads.

Writing respects HTTP/2 flow control without blocking anyone: each stream
keeps what it was asked to send until the peer's window lets it go, and the
status (trailers) goes only after the stream's last message.

DATA frames are the core's own, not h2's: h2's public ``send_data`` copies a
payload four times on its way out (hyperframe's body join, header + body,
h2's outbound ``bytearray``, ``bytes()`` of it), and a Log stream is almost
all payload. The core writes a 9-byte frame header and hands the message (or
a view of it) over as it is; ``buffers_to_send`` joins small buffers into
one write and passes large ones through, so a Log message reaches TLS
without a copy. The outbound flow-control windows are therefore the core's
too: it reads the peer's WINDOW_UPDATE frames itself (h2 never sees them,
so h2's own windows, which nothing it sends consumes, cannot overflow) and
applies SETTINGS_INITIAL_WINDOW_SIZE changes h2 reports. Every other frame,
including END_STREAM (an empty DATA frame or trailers), is h2's, so its
stream states stay the truth.

A request that breaks a gRPC rule is answered on its own stream, with a
precise status, and the connection serves on: from its headers alone the
core answers it itself (``RequestRefused``); from its messages the core
reports ``StreamRejected`` for the handler to answer. Only a broken HTTP/2
connection ends the connection: ``next_event`` raises
``RemoteProtocolError`` once, with a GOAWAY queued.
"""

from __future__ import annotations

import contextlib
import enum
import re
import struct
from collections import deque

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from rund_trio.rpc._errors import LocalProtocolError, RemoteProtocolError
from rund_trio.rpc._events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageReceived,
    NeedData,
    RequestEnded,
    RequestReceived,
    RequestRefused,
    ResponseEnded,
    ResponseReceived,
    StreamRejected,
    StreamReset,
)
from rund_trio.rpc._state import CallEvent, StreamState, transition
from rund_trio.rpc._status import Status, StatusCode

__all__ = ["MAX_FRAME_SIZE", "GrpcConnection", "Role"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
_DATA = 0x0
_WINDOW_UPDATE = 0x8
_DEFAULT_WINDOW = 65_535
_FRAME_HEADER_FORMAT = struct.Struct(">HBBBL")  # length (24 bits), type, flags, stream id
_WINDOW_UPDATE_FRAME = struct.Struct(">xHBBLL")  # length (< 2**16), type, flags, stream, increment
_END_STREAM = 0x1
_PADDED = 0x8
_CONNECTION_RECEIVE_WINDOW = _DEFAULT_WINDOW + 2**30
"""What the connection lets the peer send (raised by 2**30 at its start)."""
LARGE_WRITE = 64 * 1024
"""Buffers this large are written on their own (uncopied), not joined."""
MAX_FRAME_SIZE = 2**24 - 1
"""The largest frame either side accepts (advertised in SETTINGS)."""
_MAX_WINDOW = 2**31 - 1
_MAX_HEADER_LIST_SIZE = 16 * 1024
HTTP_UNSUPPORTED_MEDIA_TYPE = 415
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_END_OF_REQUEST: list[tuple[str, str]] = []
"""The client's "end" marker: END_STREAM, no trailers."""
_HEADERS = 0x1
_RST_STREAM = 0x3
_END_HEADERS = 0x4
_DEFAULT_HEADER_TABLE_SIZE = 4096
_RESPONSE_HEADERS_BLOCK = b"\x88\x0f\x10\x10application/grpc"
"""``:status: 200`` (static table entry 8) and ``content-type: application/grpc``
(a literal without indexing, its name static entry 31), HPACK-encoded: the
same bytes for every response, and not touching either side's dynamic table."""
_MAX_OWN_BLOCK = 16_384
"""The largest header block the core sends itself: one frame of the smallest
size a peer may allow (a larger one is h2's, with CONTINUATION frames)."""


_READING = (StreamState.OPEN, StreamState.LOCAL_DONE)
"""The states of a stream whose DATA the core reads (the peer may still send)."""


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class _ConnectionState(enum.Enum):
    OPEN = "open"
    ERROR = "error"
    """The peer broke HTTP/2 (a GOAWAY is queued) or went away."""


class _MessageError(Exception):
    def __init__(self, status: Status) -> None:
        self.status = status


class _MessageReader:
    """gRPC's length-prefixed messages out of one stream's DATA payloads, and
    the flow-control credit each message accounts for.

    Payloads come as views of the bytes received (``_Inbound``); a message is
    copied out of them once, into its own ``bytes``, however many frames and
    reads it was split across."""

    def __init__(self, max_length: int, too_large: str) -> None:
        self._max_length = max_length
        self._too_large = too_large
        self._prefix = bytearray()
        """The start of a 5-byte prefix split across payloads."""
        self._parts: list[memoryview] = []
        """The parts of the message being received, once its prefix is known."""
        self._missing = 0
        """Bytes of that message still to come."""
        self._length = -1
        """Its length, or -1 between messages."""
        self.credit = 0
        """Flow-controlled bytes received and not yet attributed to a message."""

    def feed(
        self, payload: list[memoryview], flow_controlled_length: int
    ) -> list[tuple[bytes, int]]:
        """Whole messages completed by ``payload``, each with its credit; raises
        ``_MessageError`` for a message that is compressed or too large (seen
        from its prefix, before its body is kept). ``payload``'s views are
        kept until their message is complete: their bytes must not change."""
        self.credit += flow_controlled_length
        messages: list[bytes] = []
        for piece in payload:
            at, size = 0, len(piece)
            while at < size:
                if self._length < 0:
                    if not self._prefix and size - at >= 5:
                        prefix: bytes | bytearray | memoryview = piece[at : at + 5]
                        at += 5
                    else:
                        take = min(5 - len(self._prefix), size - at)
                        self._prefix += piece[at : at + take]
                        at += take
                        if len(self._prefix) < 5:
                            break
                        prefix, self._prefix = self._prefix, bytearray()
                    self._start(prefix[0], int.from_bytes(prefix[1:5], "big"))
                    if self._missing == 0:
                        messages.append(b"")
                        self._length = -1
                    continue
                take = min(self._missing, size - at)
                if take == self._length:  # the whole message in this piece: one copy
                    messages.append(bytes(piece[at : at + take]))
                    self._length = -1
                    at += take
                    continue
                self._parts.append(piece[at : at + take])
                self._missing -= take
                at += take
                if self._missing == 0:
                    messages.append(b"".join(self._parts))
                    self._parts.clear()
                    self._length = -1
        if not messages:
            return []
        credited = [(message, 0) for message in messages]
        credited[-1] = (messages[-1], self.credit)
        self.credit = 0
        return credited

    def _start(self, flag: int, length: int) -> None:
        if flag:
            raise _MessageError(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    "a message is flagged compressed but the request names no grpc-encoding",
                )
            )
        if length > self._max_length:
            raise _MessageError(
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    self._too_large.format(length=length, limit=self._max_length),
                )
            )
        self._length = self._missing = length

    def truncation(self) -> str | None:
        """What is missing when the stream ends here, or None if nothing is."""
        if self._prefix:
            return f"{len(self._prefix)} of 5 (header) bytes arrived"
        if self._length < 0:
            return None
        return f"{self._length - self._missing} of {self._length} bytes arrived"


class _Inbound:
    """The bytes received and not yet parsed, kept as the buffers they came
    in (no copy): a frame is taken out as views of them, so reading is linear
    in the bytes however a frame was split across reads."""

    def __init__(self) -> None:
        self._pieces: deque[memoryview] = deque()
        self.size = 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.nbytes:
            self._pieces.append(view.cast("B") if view.format != "B" else view)
            self.size += view.nbytes

    def peek(self, count: int) -> bytes:
        """The first ``count`` bytes (fewer if fewer arrived), left in place."""
        first = self._pieces[0] if self._pieces else b""
        if len(first) >= count:
            return bytes(first[:count])
        joined = bytearray()
        for piece in self._pieces:
            joined += piece[: count - len(joined)]
            if len(joined) == count:
                break
        return bytes(joined)

    def take(self, count: int) -> list[memoryview]:
        """The first ``count`` bytes (there must be as many), removed, as views."""
        out: list[memoryview] = []
        pieces = self._pieces
        self.size -= count
        while count:
            piece = pieces[0]
            if len(piece) <= count:
                out.append(pieces.popleft())
                count -= len(piece)
            else:
                out.append(piece[:count])
                pieces[0] = piece[count:]
                count = 0
        return out

    def take_bytes(self, count: int) -> bytes:
        """``take``, as one ``bytes``."""
        parts = self.take(count)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)


class _Stream:
    """One call's state on this connection (a plain class: importing
    ``dataclasses`` costs a one-shot CLI command ~15 ms)."""

    __slots__ = (
        "credit",
        "end",
        "end_sent",
        "headers_sent",
        "outbound",
        "path",
        "pending",
        "reader",
        "received",
        "response_headers",
        "state",
        "stream_id",
        "window",
    )

    def __init__(
        self,
        stream_id: int,
        reader: _MessageReader,
        *,
        path: str = "",
        headers_sent: bool = False,
        window: int = _DEFAULT_WINDOW,
    ) -> None:
        self.stream_id = stream_id
        self.reader = reader
        self.state = StreamState.OPEN
        self.path = path
        self.headers_sent = headers_sent
        self.outbound: deque[bytes | memoryview] = deque()
        self.pending = 0
        """Bytes of ``outbound`` not yet given to h2."""
        self.end: list[tuple[str, str]] | None = None
        """What ends our side once ``outbound`` is empty: trailers (server) or
        ``_END_OF_REQUEST`` (client); None until asked."""
        self.response_headers: dict[str, str] = {}
        self.end_sent = False
        self.window = window
        """What the peer lets this stream send (its flow-control window), in bytes."""
        self.received = 0
        """DATA bytes the peer sent on it whose credit has not gone back (what its
        receive window lacks)."""
        self.credit = 0
        """Of those, bytes consumed whose credit waits to go back in one WINDOW_UPDATE."""


class GrpcConnection:
    """One HTTP/2 connection carrying gRPC calls, for either role.

    Args:
        role: ``Role.SERVER`` answers calls, ``Role.CLIENT`` makes them.
        max_receive_message: largest message accepted from the peer, checked
            from its length prefix; each stream's receive window is twice it.
        max_concurrent_streams: (server) calls the client may have open at
            once, advertised in SETTINGS; a client that opens more breaks
            HTTP/2 and loses the connection.

    Any exception from ``next_event`` puts the connection in its ERROR state:
    from then on it only hands over what it queued (a GOAWAY) and reports
    ``ConnectionClosed``.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_receive_message: int = 4 * 1024 * 1024,
        max_concurrent_streams: int = 2**16,
    ) -> None:
        self.role = role
        self._client = role is Role.CLIENT
        self._max_receive_message = max_receive_message
        self._max_concurrent_streams = max_concurrent_streams
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=self._client,
                header_encoding="utf-8",
                # What this side sends is built here, well-formed; what it
                # receives is still validated.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._h2.local_settings = h2.settings.Settings(
            client=self._client,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: min(
                    2 * max_receive_message, _MAX_WINDOW
                ),
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST_SIZE,
            },
        )
        self._h2.max_inbound_frame_size = MAX_FRAME_SIZE
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(2**30)
        self._receive_window = min(2 * max_receive_message, _MAX_WINDOW)
        """Each stream's receive window (advertised in SETTINGS)."""
        self._received = 0
        """DATA bytes the core read on the connection whose credit has not gone back."""
        self._credit = 0
        """Of those, bytes consumed whose credit waits for one WINDOW_UPDATE."""
        self._inbound = _Inbound()
        self._outgoing: list[bytes | memoryview] = []
        """Buffers to hand over, in order: h2's bytes and the core's DATA frames."""
        self._window = _DEFAULT_WINDOW
        """What the peer lets the connection send (its connection window)."""
        self._preface_pending = not self._client
        self._eof = False
        self._state = _ConnectionState.OPEN
        self._closed_reason = ""
        self._closed_by_error = False
        self._events: deque[Event] = deque()
        self._streams: dict[int, _Stream] = {}
        self._sending: dict[int, _Stream] = {}
        """Streams with bytes or an end waiting for flow-control credit, in order."""
        self._authority = "localhost"
        self._own_headers = True
        """(server) Whether response headers may be the core's constant block."""

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the peer; ``b""`` means the peer closed
        its side (end of file). Never parses: ``next_event`` does. ``data`` is
        kept as it is, not copied, until it is parsed (and a message's bytes
        are copied out of it): the caller must not change it afterwards."""
        if len(data):
            self._inbound.append(data)
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """The next event, in the order its bytes arrived, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: the peer broke HTTP/2; a GOAWAY is queued and
                the connection is now in ERROR (later calls report
                ``ConnectionClosed``).
        """
        while not self._events:
            if self._state is _ConnectionState.ERROR:
                return ConnectionClosed(self._closed_reason, error=self._closed_by_error)
            if not self._next_frame():
                if self._eof:
                    self._fail("the peer closed the connection", error=False)
                    continue
                return NEED_DATA
            self._flush_all()
        return self._events.popleft()

    def _next_frame(self) -> bool:
        """Handle the next frame if it has arrived whole (False if not yet).

        DATA for a stream that reads it is the core's own (``_data_frame``), so
        are WINDOW_UPDATEs; every other frame goes to h2, as one ``bytes``."""
        inbound = self._inbound
        if self._preface_pending:
            if not _PREFACE.startswith(inbound.peek(len(_PREFACE))):
                self._h2.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
                self._fail("the peer broke HTTP/2: no HTTP/2 preface", error=True)
                raise RemoteProtocolError(
                    "the client did not start with the HTTP/2 preface", StatusCode.UNAVAILABLE
                )
            if inbound.size < len(_PREFACE):
                return False
            self._preface_pending = False
            self._to_h2(inbound.take_bytes(len(_PREFACE)))
            return True
        if inbound.size < _FRAME_HEADER:
            return False
        header = inbound.peek(_FRAME_HEADER)
        # (24 bits: never above MAX_FRAME_SIZE, which is what this side advertises)
        length = int.from_bytes(header[:3], "big")
        if inbound.size < _FRAME_HEADER + length:
            return False
        kind = header[3]
        if kind == _DATA:
            stream = self._streams.get(int.from_bytes(header[5:9], "big") & _MAX_WINDOW)
            if stream is not None and stream.state in _READING:
                inbound.take(_FRAME_HEADER)
                self._data_frame(stream, header[4], inbound.take(length), length)
                return True
        elif kind == _WINDOW_UPDATE:
            self._window_update(inbound.take_bytes(_FRAME_HEADER + length))
            return True
        self._to_h2(inbound.take_bytes(_FRAME_HEADER + length))
        return True

    def _to_h2(self, data: bytes) -> None:
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            raise self._protocol_error(error) from None
        for h2_event in h2_events:
            self._handle(h2_event)

    def _data_frame(
        self, stream: _Stream, flags: int, payload: list[memoryview], length: int
    ) -> None:
        """A DATA frame (RFC 9113 6.1) on a stream that reads: checked and
        counted against the receive windows as h2 would, its payload given to
        the stream's reader as views (no copy), its END_STREAM to h2 (as an
        empty DATA frame: h2's stream states stay the truth)."""
        if flags & _PADDED:
            pad = payload[0][0] if length else 0
            if not length or pad >= length:
                raise self._connection_error(
                    h2.errors.ErrorCodes.PROTOCOL_ERROR,
                    "a DATA frame's padding is not shorter than the frame",
                )
            payload = _trimmed(payload, 1, pad)
        if self._received + length > _CONNECTION_RECEIVE_WINDOW:
            raise self._connection_error(
                h2.errors.ErrorCodes.FLOW_CONTROL_ERROR,
                "DATA beyond the connection's flow-control window",
            )
        self._received += length
        if stream.received + length > self._receive_window:
            self._credit_connection(length)
            self._stream_error(stream, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)
            return
        stream.received += length
        try:
            messages = stream.reader.feed(payload, length)
        except _MessageError as error:
            self._reject(stream, error.status)
        else:
            for message, credit in messages:
                self._events.append(MessageReceived(stream.stream_id, message, credit))
        if flags & _END_STREAM and stream.stream_id in self._streams:
            self._to_h2(_data_frame_header(stream.stream_id, 0, flags=_END_STREAM))

    def _protocol_error(self, error: h2.exceptions.ProtocolError) -> RemoteProtocolError:
        if isinstance(error, h2.exceptions.TooManyStreamsError):
            why = (
                f"it opened more than {self._max_concurrent_streams} streams at once "
                "(--max-streams-per-connection)"
            )
        else:
            why = str(error) or type(error).__name__
        self._fail(f"the peer broke HTTP/2: {why}", error=True)
        return RemoteProtocolError(why, StatusCode.UNAVAILABLE)

    def _window_update(self, frame: bytes) -> None:
        """A WINDOW_UPDATE frame (RFC 9113 6.9), checked as h2 would check it."""
        stream_id = int.from_bytes(frame[5:9], "big") & _MAX_WINDOW
        if len(frame) != _FRAME_HEADER + 4:
            raise self._connection_error(
                h2.errors.ErrorCodes.FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame is not 4 bytes long"
            )
        increment = int.from_bytes(frame[9:13], "big") & _MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise self._connection_error(
                    h2.errors.ErrorCodes.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 on the connection"
                )
            self._window += increment
            if self._window > _MAX_WINDOW:
                raise self._connection_error(
                    h2.errors.ErrorCodes.FLOW_CONTROL_ERROR,
                    "the connection's flow-control window went past 2**31-1",
                )
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # ended or reset meanwhile: nothing more goes on it
        if not increment:
            self._stream_error(stream, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        stream.window += increment
        if stream.window > _MAX_WINDOW:
            self._stream_error(stream, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)

    def _initial_window_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        changed = event.changed_settings.get(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE)
        if changed is None:
            return
        delta = changed.new_value - (
            _DEFAULT_WINDOW if changed.original_value is None else changed.original_value
        )
        for stream in list(self._streams.values()):
            stream.window += delta
            if stream.window > _MAX_WINDOW:
                self._stream_error(stream, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)

    def _stream_error(self, stream: _Stream, code: h2.errors.ErrorCodes) -> None:
        """The peer broke flow control on one stream: reset it, as if the peer had."""
        self._reset(stream.stream_id, code)
        self._stream_reset(stream.stream_id, code)

    def _connection_error(self, code: h2.errors.ErrorCodes, why: str) -> RemoteProtocolError:
        self._h2.close_connection(error_code=code)
        self._fail(f"the peer broke HTTP/2: {why}", error=True)
        return RemoteProtocolError(why, StatusCode.UNAVAILABLE)

    def _fail(self, reason: str, *, error: bool) -> None:
        self._state = _ConnectionState.ERROR
        self._closed_reason = reason
        self._closed_by_error = error
        self._sending.clear()
        if not error:
            self._events.append(ConnectionClosed(reason))

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request_received(event)
        elif isinstance(event, h2.events.ResponseReceived):
            self._response_received(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.response_headers.update(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._data_received(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._stream_ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._initial_window_changed(event)
            table = event.changed_settings.get(h2.settings.SettingCodes.HEADER_TABLE_SIZE)
            if table is not None and table.new_value != _DEFAULT_HEADER_TABLE_SIZE:
                # h2's next header block must tell of the new size first: every
                # block is h2's from now on.
                self._own_headers = False
        elif isinstance(event, h2.events.ConnectionTerminated):
            why = f"the peer sent GOAWAY ({_error_name(event.error_code)})"
            self._fail(why, error=False)

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        headers = dict(event.headers)
        stream_id = event.stream_id
        path = headers.get(":path", "")
        content_type = headers.get("content-type", "")
        if not content_type.startswith("application/grpc"):
            # As grpc-go: HTTP 415 so that plain HTTP clients see an error too.
            return self._refuse(
                stream_id,
                path,
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"content-type {content_type!r} is not gRPC (application/grpc expected)",
                ),
                http_status=HTTP_UNSUPPORTED_MEDIA_TYPE,
            )
        encoding = headers.get("grpc-encoding", "identity")
        if encoding != "identity":
            # As gRPC specifies for an encoding the server does not support. Not
            # offered at all: a small request could inflate past the size cap.
            return self._refuse(
                stream_id,
                path,
                Status(
                    StatusCode.UNIMPLEMENTED,
                    f"grpc-encoding {encoding!r} is not supported: send messages uncompressed",
                ),
            )
        if event.stream_ended is not None:
            return self._refuse(
                stream_id, path, Status(StatusCode.INVALID_ARGUMENT, "the request has no message")
            )
        try:
            service, method, timeout = _parse_request_headers(headers)
        except ValueError as error:
            return self._refuse(
                stream_id,
                path,
                Status(StatusCode.INVALID_ARGUMENT, f"malformed gRPC request headers: {error}"),
            )
        too_large = (
            "the request message is {length} bytes; at most {limit} bytes are accepted "
            "(--max-request-size)"
        )
        self._streams[stream_id] = _Stream(
            stream_id,
            _MessageReader(self._max_receive_message, too_large),
            path=path,
            window=self._h2.remote_settings.initial_window_size,
        )
        metadata = tuple(
            (name, value)
            for name, value in event.headers
            if not name.startswith((":", "grpc-")) and name not in ("content-type", "te")
        )
        self._events.append(RequestReceived(stream_id, service, method, timeout, metadata))

    def _refuse(self, stream_id: int, path: str, status: Status, *, http_status: int = 200) -> None:
        """Answer a request from its headers alone and stop reading it."""
        self._h2.send_headers(
            stream_id,
            [
                (":status", str(http_status)),
                ("content-type", "application/grpc"),
                *status.trailers(),
            ],
            end_stream=True,
        )
        self._stop_reading(stream_id)
        self._events.append(RequestRefused(stream_id, path, status))

    def _stop_reading(self, stream_id: int) -> None:
        """Tell a client still sending on an answered stream to stop
        (RST_STREAM NO_ERROR, as gRPC servers do); nothing if it had ended it."""
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)

    def _response_received(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        stream.response_headers.update(event.headers)
        self._events.append(ResponseReceived(event.stream_id))

    def _data_received(self, event: h2.events.DataReceived) -> None:
        # h2 sees DATA only on streams that no longer read it (refused,
        # rejected, reset, ended: dropped, its credit given back at once), and
        # the empty END_STREAM frames of ``_data_frame``.
        length = event.flow_controlled_length
        if length:
            self._h2.acknowledge_received_data(length, event.stream_id)

    def _reject(self, stream: _Stream, status: Status) -> None:
        credit, stream.reader.credit = stream.reader.credit, 0
        self._credit_connection(credit)
        if self._client:
            # A response the client cannot take: end the call here, stop the server.
            self._streams.pop(stream.stream_id, None)
            self._sending.pop(stream.stream_id, None)
            self._reset(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
            self._events.append(ResponseEnded(stream.stream_id, status))
            return
        stream.state = transition(stream.state, CallEvent.REJECT)
        self._events.append(StreamRejected(stream.stream_id, status))

    def _stream_ended(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.state is StreamState.REJECTED:
            return
        missing = stream.reader.truncation()
        if missing is not None:
            what = "request" if not self._client else "response"
            self._reject(
                stream,
                Status(
                    StatusCode.INVALID_ARGUMENT, f"the {what} ended inside a message: {missing}"
                ),
            )
            return
        stream.state = transition(stream.state, CallEvent.REMOTE_END)
        if not self._client:
            self._events.append(RequestEnded(stream_id))
            self._forget_if_closed(stream)
            return
        self._streams.pop(stream_id, None)
        if self._sending.pop(stream_id, None) is not None or stream.end is None:
            self._reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)  # answered: stop sending
        self._events.append(ResponseEnded(stream_id, _response_status(stream.response_headers)))

    def _stream_reset(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.pop(stream_id, None)
        self._sending.pop(stream_id, None)
        if stream is None:
            return
        stream.state = transition(stream.state, CallEvent.RESET)
        if self._client:
            self._events.append(ResponseEnded(stream_id, _reset_status(error_code)))
        else:
            self._events.append(StreamReset(stream_id, int(error_code)))

    def _forget_if_closed(self, stream: _Stream) -> None:
        if stream.state is StreamState.CLOSED:
            self._streams.pop(stream.stream_id, None)

    def acknowledge(self, stream_id: int, flow_controlled_length: int) -> None:
        """Give back the receive-window credit of a consumed message, so that
        the peer may send more; a slow consumer holds back its own stream.
        The credit goes back in WINDOW_UPDATEs of a quarter of a window or more."""
        if not flow_controlled_length or self._state is not _ConnectionState.OPEN:
            return
        self._credit_connection(flow_controlled_length)
        stream = self._streams.get(stream_id)
        if stream is None or stream.state not in _READING:
            return  # it reads no more: its window no longer matters
        stream.credit += flow_controlled_length
        if stream.credit >= self._receive_window // 4:
            self._send_window_update(stream_id, stream.credit)
            stream.received -= stream.credit
            stream.credit = 0

    def _credit_connection(self, length: int) -> None:
        self._credit += length
        if self._credit >= _CONNECTION_RECEIVE_WINDOW // 4 and self._state is _ConnectionState.OPEN:
            self._send_window_update(0, self._credit)
            self._received -= self._credit
            self._credit = 0

    def _send_window_update(self, stream_id: int, increment: int) -> None:
        self._take_h2_bytes()  # what h2 queued goes first
        self._outgoing.append(_WINDOW_UPDATE_FRAME.pack(4, _WINDOW_UPDATE, 0, stream_id, increment))

    # -------------------------------------------------------------- sending

    def start_request(
        self,
        service: str,
        method: str,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> int:
        """(client) Open a call; returns its stream id.

        Raises:
            LocalProtocolError: RESOURCE_EXHAUSTED when the server's cap on
                concurrent streams is reached; UNAVAILABLE when the connection is over.
        """
        self._check_open()
        stream_id: int = self._h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/{service}/{method}"),
            (":authority", self._authority),
            ("te", "trailers"),
            ("content-type", "application/grpc+proto"),
            ("user-agent", "rund-trio"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", _format_timeout(timeout)))
        headers.extend(metadata)
        try:
            self._h2.send_headers(stream_id, headers)
        except h2.exceptions.TooManyStreamsError:
            raise LocalProtocolError(
                "this connection already has as many calls open as the daemon allows "
                "(its --max-streams-per-connection); end one or open another connection",
                StatusCode.RESOURCE_EXHAUSTED,
            ) from None
        too_large = "the response message is {length} bytes; at most {limit} bytes are accepted"
        self._streams[stream_id] = _Stream(
            stream_id,
            _MessageReader(self._max_receive_message, too_large),
            path=f"/{service}/{method}",
            headers_sent=True,
            window=self._h2.remote_settings.initial_window_size,
        )
        return stream_id

    def send_message(self, stream_id: int, message: bytes, *, framed: bool = False) -> None:
        """Queue one message. ``framed``: ``message`` already carries its
        5-byte gRPC prefix (it is then sent as it is, without a copy here).
        Nothing if the stream is gone (reset, or its answer already went)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end is not None:
            return
        if not framed:
            message = b"".join((b"\0", len(message).to_bytes(4, "big"), message))
        if not stream.headers_sent:
            self._send_response_headers(stream)
        stream.outbound.append(message)
        stream.pending += len(message)
        self._sending[stream_id] = stream
        self._flush(stream)

    def send_status(self, stream_id: int, status: Status) -> None:
        """(server) End the call with ``status``, after every message queued
        before it. If the client is still sending, it is told to stop
        (RST_STREAM NO_ERROR) once the status went. Nothing if the stream is gone."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end is not None:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            stream.end = [
                (":status", "200"),
                ("content-type", "application/grpc"),
                *status.trailers(),
            ]
        else:
            stream.end = status.trailers()
        self._sending[stream_id] = stream
        self._flush(stream)

    def end_request(self, stream_id: int) -> None:
        """(client) The request is complete: END_STREAM after its last message."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.end is not None:
            return
        stream.end = _END_OF_REQUEST
        self._sending[stream_id] = stream
        self._flush(stream)

    def reset_stream(self, stream_id: int, *, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abandon a call at once (RST_STREAM): what it still had queued is
        dropped, and no event about it follows. Nothing if it is already over."""
        self._streams.pop(stream_id, None)
        self._sending.pop(stream_id, None)
        self._reset(stream_id, code)

    def _reset(self, stream_id: int, code: int) -> None:
        if self._state is not _ConnectionState.OPEN:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            self._h2.reset_stream(stream_id, code)

    def send_headers(self, stream_id: int) -> None:
        """(server) Send the response headers now, before any message (a
        streaming call's client may wait for them). Nothing if already sent."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.headers_sent and stream.end is None:
            self._send_response_headers(stream)

    def _send_response_headers(self, stream: _Stream) -> None:
        """The response headers, the core's own HEADERS frame of a constant
        block when it can (h2 never learns of them: it sends the trailers as
        the stream's first and last headers, which is all its state needs)."""
        stream.headers_sent = True
        if not self._own_headers:
            self._h2.send_headers(
                stream.stream_id, [(":status", "200"), ("content-type", "application/grpc")]
            )
            return
        self._take_h2_bytes()  # what h2 queued goes first
        self._outgoing.append(_response_headers_frame(stream.stream_id))

    def pending(self, stream_id: int) -> int:
        """Bytes queued on the stream that flow control has not yet let go
        (0 once they are all in ``data_to_send``, or the stream is gone)."""
        stream = self._sending.get(stream_id)
        return 0 if stream is None else stream.pending

    def is_open(self, stream_id: int) -> bool:
        """Whether the call on ``stream_id`` is still known (not ended, reset or refused)."""
        return stream_id in self._streams

    def _flush_all(self) -> None:
        for stream in list(self._sending.values()):
            self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        """Give h2 what the stream's window allows, and its end after the last byte."""
        if self._state is not _ConnectionState.OPEN:
            return
        h2c = self._h2
        stream_id = stream.stream_id
        outbound = stream.outbound
        try:
            if outbound:
                self._take_h2_bytes()  # what h2 queued (these headers) goes first
            max_frame: int = h2c.max_outbound_frame_size
            while outbound:
                window = min(self._window, stream.window, max_frame)
                if window <= 0:
                    return
                piece = outbound[0]
                if len(piece) <= window:
                    outbound.popleft()
                    chunk = piece
                else:
                    view = memoryview(piece)
                    chunk, outbound[0] = view[:window], view[window:]
                size = len(chunk)
                self._window -= size
                stream.window -= size
                stream.pending -= size
                self._outgoing.append(_data_frame_header(stream_id, size))
                self._outgoing.append(chunk)
            if stream.end is None:
                del self._sending[stream_id]
                return
            if stream.end is not _END_OF_REQUEST:
                block = self._own_block(stream)
                if block is not None:
                    self._take_h2_bytes()  # what h2 queued goes first
                    self._outgoing.append(
                        _frame_header(len(block), _HEADERS, _END_HEADERS | _END_STREAM, stream_id)
                        + block
                    )
                    # h2's stream ends too, as the RST_STREAM it queues for
                    # that, which is not sent: the request has ended, the
                    # trailers end the response, the stream is closed.
                    h2c.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
                    h2c.data_to_send()
                else:
                    h2c.send_headers(stream_id, stream.end, end_stream=True)
                    if stream.state is not StreamState.REMOTE_DONE:
                        self._stop_reading(stream_id)
            elif not stream.end_sent:
                h2c.end_stream(stream_id)
                stream.end_sent = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            pass  # reset meanwhile: nothing of it is sent any more
        self._sending.pop(stream_id, None)
        stream.state = transition(stream.state, CallEvent.LOCAL_END)
        if stream.end is not _END_OF_REQUEST:
            self._streams.pop(
                stream_id, None
            )  # answered: whatever else the client sends is dropped

    def _own_block(self, stream: _Stream) -> bytes | None:
        """(server) The trailers of ``stream`` as the core's own header block,
        when the core may send them itself: the request has ended (nothing
        more will come on the stream), and the peer keeps HPACK's default
        table size. None when h2 is to send them."""
        if not self._own_headers or stream.state is not StreamState.REMOTE_DONE:
            return None
        assert stream.end is not None
        block = _literal_block(stream.end)
        return block if len(block) <= _MAX_OWN_BLOCK else None

    def _take_h2_bytes(self) -> None:
        data: bytes = self._h2.data_to_send()
        if data:
            self._outgoing.append(data)

    def data_to_send(self) -> bytes:
        """The bytes to write next, in order (``b""`` when there are none),
        joined into one ``bytes``. Once they are handed over they are the
        caller's to write."""
        self._take_h2_bytes()
        outgoing = self._outgoing
        if not outgoing:
            return b""
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        return bytes(data) if isinstance(data, memoryview) else data

    def buffers_to_send(self) -> list[bytes | memoryview]:
        """The buffers to write next, in order (empty when there are none):
        runs of small buffers joined into one, each buffer of ``LARGE_WRITE``
        bytes or more on its own as it was given (a message's payload, or a
        view of it: no copy). The caller writes each, in order, and must not
        change a buffer it gave to ``send_message``."""
        self._take_h2_bytes()
        outgoing = self._outgoing
        if not outgoing:
            return []
        buffers: list[bytes | memoryview] = []
        run: list[bytes | memoryview] = []
        for buffer in outgoing:
            if len(buffer) < LARGE_WRITE:
                run.append(buffer)
                continue
            if run:
                buffers.append(run[0] if len(run) == 1 else b"".join(run))
                run = []
            buffers.append(buffer)
        if run:
            buffers.append(run[0] if len(run) == 1 else b"".join(run))
        outgoing.clear()
        return buffers

    def has_data_to_send(self) -> bool:
        """Whether ``data_to_send`` would return bytes (they stay queued)."""
        self._take_h2_bytes()
        return bool(self._outgoing)

    def close(self, reason: str = "", *, reset_calls: bool = False) -> None:
        """Queue a GOAWAY (NO_ERROR): this side is done with the connection.
        ``reset_calls``: then reset every call still open (RST_STREAM CANCEL,
        the core's own frames, after the GOAWAY), so that the peer learns
        first that the connection ends, then that its calls do (a client
        with no call left may close its side at once)."""
        if self._state is not _ConnectionState.OPEN:
            return
        calls = list(self._streams) if reset_calls else []
        self._h2.close_connection()
        self._take_h2_bytes()
        for stream_id in calls:
            self._outgoing.append(
                _frame_header(4, _RST_STREAM, 0, stream_id)
                + int(h2.errors.ErrorCodes.CANCEL).to_bytes(4, "big")
            )
        self._fail(reason or "closed by this side", error=False)

    def _check_open(self) -> None:
        if self._state is not _ConnectionState.OPEN:
            raise LocalProtocolError(
                f"the connection is closed: {self._closed_reason}", StatusCode.UNAVAILABLE
            )

    @property
    def closed_reason(self) -> str | None:
        """Why the connection is over, or None while it is open."""
        return None if self._state is _ConnectionState.OPEN else self._closed_reason

    @property
    def peer_max_concurrent_streams(self) -> int:
        return int(self._h2.remote_settings.max_concurrent_streams)


def _data_frame_header(stream_id: int, length: int, *, flags: int = 0) -> bytes:
    """A DATA frame's 9-byte header."""
    return _frame_header(length, _DATA, flags, stream_id)


def _trimmed(views: list[memoryview], head: int, tail: int) -> list[memoryview]:
    """``views`` without their first ``head`` and last ``tail`` bytes (a DATA
    frame's padding)."""
    out: list[memoryview] = []
    for view in views:
        skip = min(head, len(view))
        head -= skip
        if skip < len(view):
            out.append(view[skip:])
    while tail and out:
        last = out.pop()
        if len(last) > tail:
            out.append(last[: len(last) - tail])
            tail = 0
        else:
            tail -= len(last)
    return out


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """A frame's 9-byte header."""
    return _FRAME_HEADER_FORMAT.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


def _response_headers_frame(stream_id: int) -> bytes:
    """A HEADERS frame (END_HEADERS) carrying ``_RESPONSE_HEADERS_BLOCK``."""
    block = _RESPONSE_HEADERS_BLOCK
    return _frame_header(len(block), _HEADERS, _END_HEADERS, stream_id) + block


def _literal_block(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK header block of ``headers`` that leaves every dynamic table
    as it was: literals without indexing (RFC 7541 6.2.2), not Huffman-coded;
    ``:status: 200`` and ``content-type`` from the static table."""
    parts: list[bytes] = []
    for name, value in headers:
        if name == ":status" and value == "200":
            parts.append(b"\x88")
            continue
        encoded = value.encode()
        if name == "content-type":
            parts.append(b"\x0f\x10")  # without indexing, name: static entry 31
        else:
            raw = name.encode()
            parts.append(b"\x00" + _hpack_integer(len(raw), 7) + raw)
        parts.append(_hpack_integer(len(encoded), 7) + encoded)
    return b"".join(parts)


def _hpack_integer(value: int, prefix_bits: int) -> bytes:
    """``value`` in HPACK's integer encoding (RFC 7541 5.1), the prefix's
    other bits zero (a string's length: not Huffman-coded)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _parse_request_headers(headers: dict[str, str]) -> tuple[str, str, float | None]:
    """(service, method, timeout seconds) of a gRPC request; ValueError says what is wrong."""
    if headers.get(":method") != "POST":
        raise ValueError(f"method {headers.get(':method')!r} is not POST")
    if headers.get(":scheme") not in ("http", "https"):
        raise ValueError(f"scheme {headers.get(':scheme')!r} is neither http nor https")
    path = headers.get(":path", "")
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        raise ValueError(f"path {path!r} is not /<service>/<method>")
    if headers.get("te") != "trailers":
        raise ValueError("te is not 'trailers' (an incompatible proxy?)")
    timeout = headers.get("grpc-timeout")
    return parts[1], parts[2], None if timeout is None else parse_timeout(timeout)


def parse_timeout(text: str) -> float:
    """grpc-timeout in seconds. Zero (or less than a nanosecond's unit) is a
    deadline that has passed, never "no deadline"."""
    match = _TIMEOUT.fullmatch(text)
    if match is None:
        raise ValueError(f"grpc-timeout {text!r} is not 1 to 8 digits and a unit (HMSmun)")
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


def _format_timeout(seconds: float) -> str:
    """grpc-timeout for ``seconds``: the finest unit whose value fits in 8 digits."""
    seconds = max(seconds, 0.0)
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        value = round(seconds / scale)
        if value < 10**8:
            return f"{value}{unit}"
    return f"{min(int(seconds / 3600) + 1, 10**8 - 1)}H"


def _response_status(headers: dict[str, str]) -> Status:
    if "grpc-status" in headers:
        return Status.from_trailers(headers)
    http = headers.get(":status", "")
    if http and http != "200":
        return Status(StatusCode.UNKNOWN, f"the daemon answered HTTP {http}, not gRPC")
    return Status(StatusCode.UNKNOWN, "the call ended without a status")


def _reset_status(error_code: int) -> Status:
    name = _error_name(error_code)
    if error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
        return Status(StatusCode.UNAVAILABLE, "the daemon refused the call (REFUSED_STREAM)")
    if error_code in (h2.errors.ErrorCodes.CANCEL, h2.errors.ErrorCodes.NO_ERROR):
        return Status(StatusCode.CANCELLED, f"the daemon cancelled the call ({name})")
    return Status(StatusCode.INTERNAL, f"the daemon reset the call ({name})")


def _error_name(error_code: int) -> str:
    try:
        return str(h2.errors.ErrorCodes(error_code).name)
    except ValueError:
        return f"error {error_code}"

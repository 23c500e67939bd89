"""purerpc's HTTP/2 connection with buffers that cost time linear in the bytes.

purerpc 0.8 drives h2 3.2, whose buffers are quadratic or copy-heavy for the
large DATA frames Log streams are made of (measured with py-spy on a 1 GB Log):

* ``FrameBuffer.add_data`` appends each received TLS record (16 KiB) to a
  ``bytes``, copying the whole partial frame every time: a 1 MiB frame cost
  ~32 MiB of copying, and h2 then copied the frame body twice more;
* every frame sent was copied four times on its way out (the padding join,
  header + body, the outbound ``bytearray``, and ``bytes()`` of it).

``GrpcConnection`` is purerpc's ``GRPCConnection`` on an ``H2Connection``
that keeps received data as views joined once per frame, joins small outbound
frames into one write and hands large payloads to TLS uncopied; purerpc's
message buffers hold views too. The HTTP/2 state machine is h2's, unchanged.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
from hyperframe.exceptions import InvalidFrameError
from hyperframe.frame import DataFrame, Frame
from purerpc.grpclib.buffers import ByteBuffer
from purerpc.grpclib.connection import GRPCConfiguration, GRPCConnection

_FRAME_HEADER = struct.Struct(">HBBBL")
LARGE_WRITE = 64 * 1024
"""Outbound buffers this large are written on their own rather than joined."""
_DATA_FRAME = 0x0
_END_STREAM = 0x1


class FrameBuffer(h2.frame_buffer.FrameBuffer):  # type: ignore[misc]
    """h2's frame buffer, keeping what was received as a list of pieces: a
    frame's body is joined from them once, and a DATA frame's body is that
    join (hyperframe would copy it again)."""

    data: bytes

    def __init__(self, server: bool = False) -> None:
        super().__init__(server=server)
        self._pieces: list[memoryview] = []
        self._size = 0

    def add_data(self, data: bytes) -> None:
        if self._preamble_len:  # h2's own check of the client's connection preface
            super().add_data(data)
            data, self.data = self.data, b""
        if data:
            self._pieces.append(memoryview(data))
            self._size += len(data)

    def _take(self, length: int) -> bytes:
        """The next ``length`` received bytes, removed from the buffer."""
        taken: list[memoryview] = []
        needed = length
        while needed:
            piece = self._pieces[0]
            if len(piece) <= needed:
                taken.append(self._pieces.pop(0))
                needed -= len(piece)
            else:
                taken.append(piece[:needed])
                self._pieces[0] = piece[needed:]
                needed = 0
        self._size -= length
        return taken[0].tobytes() if len(taken) == 1 else b"".join(taken)

    def _peek_header(self) -> bytes:
        first = self._pieces[0]
        if len(first) >= 9:
            return first[:9].tobytes()
        return b"".join(self._pieces)[:9]

    def next(self) -> Any:
        while True:
            if self._size < 9:
                raise StopIteration()
            frame, length = self._parse_frame_header(self._peek_header())
            if self._size < length + 9:
                raise StopIteration()
            self._validate_frame_length(length)
            self._take(9)
            body = self._take(length)
            if isinstance(frame, DataFrame) and "PADDED" not in frame.flags:
                frame.data = body
                frame.body_len = length
            elif frame is not None:
                try:
                    frame.parse_body(memoryview(body))
                except InvalidFrameError as error:
                    raise h2.exceptions.FrameDataMissingError(
                        "Frame data missing or invalid"
                    ) from error
            frame = self._update_header_buffer(frame)
            if frame is not None:
                return frame

    __next__ = next


class H2Connection(h2.connection.H2Connection):  # type: ignore[misc]
    """h2's connection with the buffers above. Outbound frames wait as a queue
    of buffers; ``data_to_send`` joins runs of small ones (so a unary reply is
    one write) and hands a large DATA payload over as it is, uncopied."""

    _data_to_send: bytearray

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self._outbound: deque[bytes | memoryview] = deque()
        self.incoming_buffer = FrameBuffer(server=not config.client_side)

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        self._take_direct_writes()
        for frame in frames:
            if isinstance(frame, DataFrame) and not frame.flags - {"END_STREAM"} and frame.data:
                flags = _END_STREAM if "END_STREAM" in frame.flags else 0
                length = len(frame.data)
                self._outbound.append(
                    _FRAME_HEADER.pack(
                        (length >> 8) & 0xFFFF,
                        length & 0xFF,
                        _DATA_FRAME,
                        flags,
                        frame.stream_id & 0x7FFFFFFF,
                    )
                )
                self._outbound.append(frame.data)
            else:
                self._outbound.append(frame.serialize())

    def _take_direct_writes(self) -> None:
        # h2 writes the connection preamble straight into ``_data_to_send``.
        if self._data_to_send:
            self._outbound.append(bytes(self._data_to_send))
            self._data_to_send = bytearray()

    def data_to_send(self, amount: int | None = None) -> bytes | memoryview:
        """The next bytes to write; call until it returns nothing."""
        self._take_direct_writes()
        if amount is not None:
            data = b"".join(self._outbound)
            self._outbound.clear()
            if len(data) > amount:
                self._outbound.append(data[amount:])
                data = data[:amount]
            return data
        run: list[bytes | memoryview] = []
        while self._outbound:
            if len(self._outbound[0]) >= LARGE_WRITE:
                if not run:
                    return self._outbound.popleft()
                break
            run.append(self._outbound.popleft())
        return b"".join(run)

    def clear_outbound_data_buffer(self) -> None:
        self._data_to_send = bytearray()
        self._outbound = deque()


class _ViewBuffer(ByteBuffer):  # type: ignore[misc]
    """purerpc's buffer of received DATA, holding views: taking a message's
    5-byte prefix off a 1 MiB piece no longer copies the rest."""

    def append(self, data: bytes, flow_controlled_length: int | None = None) -> None:
        super().append(data, flow_controlled_length)
        piece, length = self._deque.pop()
        self._deque.append((memoryview(piece), length))


class GrpcConnection(GRPCConnection):  # type: ignore[misc]
    """purerpc's gRPC-over-HTTP/2 state machine on the ``H2Connection`` above,
    its message buffers holding views."""

    def _request_received(self, event: h2.events.RequestReceived) -> list[Any]:
        events: list[Any] = super()._request_received(event)
        self.message_read_buffers[event.stream_id]._buffer = _ViewBuffer()
        return events

    def _response_received(self, event: h2.events.ResponseReceived) -> list[Any]:
        events: list[Any] = super()._response_received(event)
        if event.stream_id in self.message_read_buffers:
            self.message_read_buffers[event.stream_id]._buffer = _ViewBuffer()
        return events

    def __init__(self, config: GRPCConfiguration) -> None:
        super().__init__(config=config)
        self.h2_connection = H2Connection(
            h2.config.H2Configuration(client_side=config.client_side, header_encoding="utf-8")
        )
        self.h2_connection.clear_outbound_data_buffer()
        self._set_h2_connection_local_settings()

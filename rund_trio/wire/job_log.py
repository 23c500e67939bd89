"""``JobLog`` messages encoded and decoded by hand (and ``JobInput`` encoded).

A Log stream is almost all payload. protobuf would copy each chunk into a
message and again when serializing it, and the gRPC layer once more to prefix it;
on the client, once when parsing and again when the field is read. Here the
daemon frames a chunk with one copy (``framed_log_message``: the gRPC length
prefix, the field's tag and length, the chunk) and the client takes it out
with one (``LogChunk``). Both are checked against protobuf in the tests.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from rund_trio.api import rund_pb2 as pb

if TYPE_CHECKING:  # clients import this module: no need for the daemon's journal
    from rund_trio.logs.journal import Piece

_GRPC_PREFIX = struct.Struct(">BI")  # compressed flag, message length
# JobLog: stdout = 1, stderr = 2, both bytes (wire type 2)
_STDOUT_TAG, _STDERR_TAG = 0x0A, 0x12
_TAGS = {1: bytes([_STDOUT_TAG]), 2: bytes([_STDERR_TAG])}  # by journal.Stream
_RECORDED_AT_TAG = b"\x82\x01"  # JobLog.recorded_at = 16, a message (wire type 2)


class FramedMessage(bytes):
    """A response already encoded as one gRPC length-prefixed message."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _timestamp(ns: int) -> bytes:
    """A ``google.protobuf.Timestamp`` field for ``ns`` since the epoch."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    body = (b"\x08" + _varint(seconds) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b""
    )
    return _RECORDED_AT_TAG + _varint(len(body)) + body


def framed_log_message(piece: Piece) -> FramedMessage:
    """The gRPC message carrying ``pb.JobLog`` with ``piece`` in its stream's
    field, and its ``recorded_at`` when it has one."""
    field = _TAGS[piece.stream] + _varint(len(piece.data))
    trailer = b"" if piece.recorded_at is None else _timestamp(piece.recorded_at)
    length = len(field) + len(piece.data) + len(trailer)
    return FramedMessage(b"".join((_GRPC_PREFIX.pack(0, length), field, piece.data, trailer)))


# JobInput: ulid = 1 (string), data = 2 (bytes)
_INPUT_DATA_TAG = b"\x12"


def framed_input_message(data: bytes) -> bytes:
    """The gRPC message carrying ``pb.JobInput(data=data)``, with one copy of
    ``data`` (protobuf and a generic gRPC send would make four): the client's Input is
    almost all payload, like a Log stream."""
    field = _INPUT_DATA_TAG + _varint(len(data))
    return b"".join((_GRPC_PREFIX.pack(0, len(field) + len(data)), field, data))


class LogChunk:
    """A received ``pb.JobLog``: its ``stdout`` and ``stderr`` bytes, and
    ``recorded_at`` (ns since the epoch) when the daemon sent it.

    Made as protobuf makes a message (an instance, then ``ParseFromString``),
    so it can stand in for ``pb.JobLog``.
    """

    __slots__ = ("recorded_at", "stderr", "stdout")

    def __init__(
        self, stdout: bytes = b"", stderr: bytes = b"", recorded_at: int | None = None
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.recorded_at = recorded_at

    def __repr__(self) -> str:
        return (
            f"LogChunk(stdout={self.stdout!r}, stderr={self.stderr!r}, "
            f"recorded_at={self.recorded_at!r})"
        )

    def ParseFromString(self, data: bytes) -> None:
        """Decode a serialized ``JobLog``; anything beyond its two fields as
        this daemon sends them goes through protobuf instead."""
        fields = _two_bytes_fields(data)
        if fields is None:
            message = pb.JobLog.FromString(data)
            self.stdout, self.stderr = message.stdout, message.stderr
            self.recorded_at = (
                message.recorded_at.seconds * 1_000_000_000 + message.recorded_at.nanos
                if message.HasField("recorded_at")
                else None
            )
        else:
            self.stdout, self.stderr = fields
            self.recorded_at = None


def _two_bytes_fields(data: bytes) -> tuple[bytes, bytes] | None:
    """(stdout, stderr) of ``data`` if it holds only those fields, else None."""
    view = memoryview(data)
    values = {_STDOUT_TAG: b"", _STDERR_TAG: b""}
    at = 0
    while at < len(view):
        tag = view[at]
        if tag not in values:
            return None
        at += 1
        length = shift = 0
        while True:
            if at >= len(view) or shift > 63:
                return None
            byte = view[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if at + length > len(view):
            return None
        values[tag] = view[at : at + length].tobytes()  # the last occurrence wins, as in protobuf
        at += length
    return values[_STDOUT_TAG], values[_STDERR_TAG]

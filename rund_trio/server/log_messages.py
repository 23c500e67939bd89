"""JobLog responses encoded by hand, ready for the wire.

A Log stream is almost all payload: protobuf would copy each chunk into a
message and again when serializing it, and purerpc once more to prefix it.
``framed_log_message`` writes the same bytes (checked against protobuf in the
tests) with one copy: the gRPC length prefix, the field's tag and length, the
chunk.
"""

from __future__ import annotations

import struct

from rund_trio.logs.journal import Piece, Stream

_GRPC_PREFIX = struct.Struct(">BI")  # compressed flag, message length
# JobLog: stdout = 1, stderr = 2, both bytes (wire type 2)
_TAGS = {Stream.STDOUT: b"\x0a", Stream.STDERR: b"\x12"}


class FramedMessage(bytes):
    """A response already encoded as one gRPC length-prefixed message."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def framed_log_message(piece: Piece) -> FramedMessage:
    """The gRPC message carrying ``pb.JobLog`` with ``piece`` in its stream's field."""
    field = _TAGS[piece.stream] + _varint(len(piece.data))
    length = len(field) + len(piece.data)
    return FramedMessage(b"".join((_GRPC_PREFIX.pack(0, length), field, piece.data)))

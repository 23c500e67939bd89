"""Hand-encoded Log messages are exactly what protobuf and gRPC framing make."""

from __future__ import annotations

import struct

import pytest

from rund_trio.api import rund_pb2 as pb
from rund_trio.logs.journal import Piece, Stream
from rund_trio.server.log_messages import framed_log_message


def grpc_framed(message: pb.JobLog) -> bytes:
    body = message.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 2**21 - 1, 2**21])
def test_a_stdout_chunk_is_encoded_as_protobuf_encodes_it(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert framed_log_message(Piece(Stream.STDOUT, data)) == grpc_framed(pb.JobLog(stdout=data))


def test_a_stderr_chunk_goes_in_the_stderr_field() -> None:
    data = b"oops\n"
    assert framed_log_message(Piece(Stream.STDERR, data)) == grpc_framed(pb.JobLog(stderr=data))


def test_a_view_is_encoded_like_the_bytes_it_shows() -> None:
    data = b"0123456789"
    piece = Piece(Stream.STDOUT, memoryview(data)[2:7])
    assert framed_log_message(piece) == grpc_framed(pb.JobLog(stdout=b"23456"))

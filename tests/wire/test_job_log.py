"""Log messages encoded and decoded by hand are exactly what protobuf makes of them."""

from __future__ import annotations

import struct

import pytest
from google.protobuf.message import DecodeError

from rund_trio.api import rund_pb2 as pb
from rund_trio.logs.journal import Piece, Stream
from rund_trio.wire.job_log import LogChunk, framed_input_message, framed_log_message


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


@pytest.mark.parametrize(
    "message",
    [
        pb.JobLog(),
        pb.JobLog(stdout=b"out"),
        pb.JobLog(stderr=b"err" * 100),
        pb.JobLog(stdout=bytes(2**21), stderr=b"both"),
    ],
    ids=["empty", "stdout", "stderr", "both"],
)
def test_a_received_log_chunk_holds_what_protobuf_would_parse(message: pb.JobLog) -> None:
    chunk = LogChunk()
    chunk.ParseFromString(message.SerializeToString())
    assert (chunk.stdout, chunk.stderr) == (message.stdout, message.stderr)


def test_a_field_sent_twice_keeps_its_last_value_as_in_protobuf() -> None:
    data = pb.JobLog(stdout=b"first").SerializeToString()
    data += pb.JobLog(stdout=b"second").SerializeToString()
    chunk = LogChunk()
    chunk.ParseFromString(data)
    assert chunk.stdout == pb.JobLog.FromString(data).stdout == b"second"


def test_a_chunk_with_fields_this_daemon_does_not_send_is_parsed_by_protobuf() -> None:
    data = pb.JobLog(stdout=b"out").SerializeToString() + b"\x18\x01"  # field 3, a varint
    chunk = LogChunk()
    chunk.ParseFromString(data)
    assert chunk.stdout == b"out"


def test_a_truncated_chunk_is_refused_as_protobuf_refuses_it() -> None:
    data = pb.JobLog(stdout=b"out").SerializeToString()[:-1]
    with pytest.raises(DecodeError):
        LogChunk().ParseFromString(data)


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 1024 * 1024])
def test_input_data_is_framed_as_protobuf_and_grpc_frame_it(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    body = pb.JobInput(data=data).SerializeToString()
    assert framed_input_message(data) == struct.pack(">BI", 0, len(body)) + body


@pytest.mark.parametrize("ns", [0, 999, 10**9, 1_733_000_000_123_456_789])
def test_a_recorded_time_is_encoded_as_protobuf_encodes_it(ns: int) -> None:
    expected = pb.JobLog(stderr=b"x")
    expected.recorded_at.seconds, expected.recorded_at.nanos = divmod(ns, 10**9)
    assert framed_log_message(Piece(Stream.STDERR, b"x", ns)) == grpc_framed(expected)


def test_a_received_chunk_with_a_recorded_time_carries_it_in_ns() -> None:
    message = pb.JobLog(stdout=b"out")
    message.recorded_at.seconds, message.recorded_at.nanos = 1_733_000_000, 5
    chunk = LogChunk()
    chunk.ParseFromString(message.SerializeToString())
    assert (chunk.stdout, chunk.recorded_at) == (b"out", 1_733_000_000_000_000_005)


def test_a_received_chunk_without_a_recorded_time_has_none() -> None:
    chunk = LogChunk()
    chunk.ParseFromString(pb.JobLog(stdout=b"out").SerializeToString())
    assert chunk.recorded_at is None

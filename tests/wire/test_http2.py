"""The linear-time HTTP/2 buffers behave exactly like h2's own."""

from __future__ import annotations

import random
import struct

import h2.config
import h2.connection
import h2.events
import h2.frame_buffer
from hyperframe.frame import DataFrame, Frame, HeadersFrame, SettingsFrame, WindowUpdateFrame
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.config import GRPCConfiguration

from rund_trio.wire.http2 import LARGE_WRITE, FrameBuffer, GrpcConnection, H2Connection


def _frames() -> list[Frame]:
    settings = SettingsFrame(0)
    settings.settings[SettingsFrame.MAX_FRAME_SIZE] = 2**20
    headers = HeadersFrame(1, data=b"\x82\x86", flags=["END_HEADERS"])
    big = DataFrame(1, data=bytes(range(256)) * 4096)
    last = DataFrame(1, data=b"tail", flags=["END_STREAM"])
    return [settings, headers, big, WindowUpdateFrame(0, window_increment=65535), last]


def _describe(frames: list[Frame]) -> list[tuple[object, ...]]:
    return [
        (type(f).__name__, f.stream_id, sorted(f.flags), getattr(f, "data", None)) for f in frames
    ]


def _parse_in_pieces(buffer: h2.frame_buffer.FrameBuffer, wire: bytes, seed: int) -> list[Frame]:
    buffer.max_frame_size = 2**24 - 1
    rng = random.Random(seed)
    parsed: list[Frame] = []
    at = 0
    while at < len(wire):
        step = rng.choice([1, 7, 9, 100, 16384, 70000])
        buffer.add_data(wire[at : at + step])
        at += step
        parsed.extend(buffer)
    return parsed


def test_frames_received_in_any_pieces_parse_as_h2_parses_them() -> None:
    wire = b"".join(f.serialize() for f in _frames())
    for seed in range(5):
        ours = _parse_in_pieces(FrameBuffer(), wire, seed)
        theirs = _parse_in_pieces(h2.frame_buffer.FrameBuffer(), wire, seed)
        assert _describe(ours) == _describe(theirs) == _describe(_frames())


def test_the_connection_preface_is_still_checked_on_the_server_side() -> None:
    buffer = FrameBuffer(server=True)
    buffer.max_frame_size = 16384
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    frame = WindowUpdateFrame(0, window_increment=1).serialize()
    buffer.add_data(preface[:5])
    buffer.add_data(preface[5:] + frame)
    assert [type(f) for f in buffer] == [WindowUpdateFrame]


def _converse(connection: h2.connection.H2Connection) -> None:
    connection.initiate_connection()
    connection.increment_flow_control_window(2**20)
    stream = connection.get_next_available_stream_id()
    connection.send_headers(
        stream, [(":method", "POST"), (":path", "/x"), (":scheme", "https"), (":authority", "a")]
    )
    connection.send_data(stream, b"x" * 10000)
    connection.send_data(stream, b"", end_stream=True)


def _client(connection_class: type[h2.connection.H2Connection]) -> h2.connection.H2Connection:
    connection = connection_class(config=h2.config.H2Configuration(client_side=True))
    _converse(connection)
    return connection


def _drain(connection: h2.connection.H2Connection) -> list[bytes]:
    writes = []
    while data := connection.data_to_send():
        writes.append(bytes(data))
    return writes


def test_what_is_sent_is_byte_for_byte_what_h2_sends() -> None:
    theirs = bytes(_client(h2.connection.H2Connection).data_to_send())
    assert b"".join(_drain(_client(H2Connection))) == theirs


def test_small_frames_go_out_in_one_write_and_a_large_payload_uncopied() -> None:
    connection = H2Connection(config=h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    settings = SettingsFrame(0)
    settings.settings[SettingsFrame.INITIAL_WINDOW_SIZE] = 2**20
    settings.settings[SettingsFrame.MAX_FRAME_SIZE] = 2**20
    connection.receive_data(
        settings.serialize() + WindowUpdateFrame(0, window_increment=2**20).serialize()
    )
    _drain(connection)
    stream = connection.get_next_available_stream_id()
    connection.send_headers(
        stream, [(":method", "POST"), (":path", "/x"), (":scheme", "https"), (":authority", "a")]
    )
    payload = memoryview(bytes(LARGE_WRITE))
    connection.send_data(stream, payload, end_stream=True)
    small, large = _drain_raw(connection)
    data_frame_header = DataFrame(stream, data=bytes(payload), flags=["END_STREAM"]).serialize()[:9]
    assert bytes(small).endswith(data_frame_header)  # the HEADERS frame, then this
    assert large is payload


def _drain_raw(connection: H2Connection) -> list[bytes | memoryview]:
    writes = []
    while data := connection.data_to_send():
        writes.append(data)
    return writes


def test_grpc_messages_split_anywhere_come_out_whole() -> None:
    buffer = request_buffer(GrpcConnection(GRPCConfiguration(client_side=False)))
    messages = [b"", b"a", bytes(range(256)) * 300, b"tail"]
    wire = b"".join(struct.pack(">BI", 0, len(m)) + m for m in messages)
    rng = random.Random(1)
    at = 0
    while at < len(wire):
        step = rng.choice([1, 3, 5, 4096, 70000])
        buffer.data_received(wire[at : at + step])
        at += step
    assert buffer.read_all_complete_messages() == messages


def request_buffer(connection: GrpcConnection) -> MessageReadBuffer:
    """The message buffer ``connection`` gives a new request stream."""
    headers = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/rund.JobController/Status"),
        (":authority", "x"),
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
    ]
    event = h2.events.RequestReceived()
    event.stream_id = 1
    event.headers = headers
    connection._request_received(event)
    buffer: MessageReadBuffer = connection.message_read_buffers[1]
    return buffer

"""The core's own DATA receive path: frames and messages however they are
split, padding, and the receive windows the core keeps and reopens itself."""

from __future__ import annotations

import itertools
import struct

import pytest

from rund_trio.rpc import (
    GrpcConnection,
    MessageReceived,
    ResponseEnded,
    ResponseReceived,
    Role,
    Status,
    StatusCode,
)
from tests.rpc.test_core import events, exchange

_DATA, _WINDOW_UPDATE, _RST_STREAM = 0x0, 0x8, 0x3
_END_STREAM, _PADDED = 0x1, 0x8


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + struct.pack(">L", stream_id)
        + payload
    )


def framed(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


def frames_in(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every frame in ``data``."""
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + length]))
        data = data[9 + length :]
    return out


def call_answered_with_headers(
    max_receive_message: int = 4 * 1024 * 1024,
) -> tuple[GrpcConnection, GrpcConnection, int]:
    """A client whose call got its response headers: what follows is DATA."""
    client = GrpcConnection(Role.CLIENT, max_receive_message=max_receive_message)
    server = GrpcConnection(Role.SERVER)
    stream_id = client.start_request("pkg.Svc", "Log")
    client.send_message(stream_id, b"x")
    client.end_request(stream_id)
    exchange(client, server)
    server.send_headers(stream_id)
    answers, _ = exchange(client, server)
    assert answers == [ResponseReceived(stream_id)]
    client.data_to_send()
    return client, server, stream_id


def test_a_message_split_across_data_frames_arrives_once_whole() -> None:
    client, _, stream_id = call_answered_with_headers()
    message = bytes(range(256)) * 100
    wire = framed(message)
    cuts = [0, 3, 5, 6, 1000, 20_000, len(wire)]  # inside the prefix, at its end, in the body
    for start, end in itertools.pairwise(cuts):
        client.receive_data(frame(_DATA, 0, stream_id, wire[start:end]))
    assert events(client) == [MessageReceived(stream_id, message, len(wire))]


def test_messages_and_frames_split_across_reads_byte_by_byte_arrive_whole() -> None:
    client, _, stream_id = call_answered_with_headers()
    messages = [b"", b"a", bytes(300)]
    wire = b"".join(framed(m) for m in messages)
    stream = frame(_DATA, 0, stream_id, wire[:7]) + frame(_DATA, 0, stream_id, wire[7:])
    for at in range(len(stream)):
        client.receive_data(stream[at : at + 1])
    got = events(client)
    assert [e.data for e in got if isinstance(e, MessageReceived)] == messages
    assert sum(e.flow_controlled_length for e in got if isinstance(e, MessageReceived)) == len(wire)


def test_a_padded_data_frame_gives_its_message_and_counts_its_padding() -> None:
    client, _, stream_id = call_answered_with_headers()
    message = b"hello"
    payload = bytes([4]) + framed(message) + bytes(4)  # pad length, data, padding
    client.receive_data(frame(_DATA, _PADDED, stream_id, payload))
    assert events(client) == [MessageReceived(stream_id, message, len(payload))]


def test_padding_as_long_as_the_frame_breaks_the_connection() -> None:
    from rund_trio.rpc import RemoteProtocolError

    client, _, stream_id = call_answered_with_headers()
    client.receive_data(frame(_DATA, _PADDED, stream_id, bytes([3, 0, 0])))
    with pytest.raises(RemoteProtocolError, match="padding"):
        events(client)


def test_end_stream_on_a_data_frame_ends_the_call_after_its_message() -> None:
    client, _, stream_id = call_answered_with_headers()
    # A peer may end the stream on its last DATA frame (no trailers): the
    # call then ends without a status, as h2 reports it.
    client.receive_data(frame(_DATA, _END_STREAM, stream_id, framed(b"last")))
    got = events(client)
    assert got[0] == MessageReceived(stream_id, b"last", 9)
    assert isinstance(got[1], ResponseEnded) and got[1].status.code is StatusCode.UNKNOWN


def test_consumed_messages_reopen_the_stream_window_a_quarter_at_a_time() -> None:
    client, _, stream_id = call_answered_with_headers(max_receive_message=1000)
    window = 2 * 1000  # each stream's receive window: twice the largest message
    for _ in range(3):
        client.receive_data(frame(_DATA, 0, stream_id, framed(bytes(95))))  # 100 bytes each
    for event in events(client):
        assert isinstance(event, MessageReceived)
        client.acknowledge(stream_id, event.flow_controlled_length)
    assert client.data_to_send() == b""  # 300 < a quarter of the window
    client.receive_data(frame(_DATA, 0, stream_id, framed(bytes(295))))
    [event] = events(client)
    assert isinstance(event, MessageReceived)
    client.acknowledge(stream_id, event.flow_controlled_length)
    updates = frames_in(client.data_to_send())
    assert updates == [(_WINDOW_UPDATE, 0, stream_id, (600).to_bytes(4, "big"))]
    assert window // 4 <= 600


def test_data_beyond_the_stream_window_resets_the_stream() -> None:
    client, _, stream_id = call_answered_with_headers(max_receive_message=100)
    for _ in range(3):  # 3 x 80 bytes > the 200-byte window, never acknowledged
        client.receive_data(frame(_DATA, 0, stream_id, framed(bytes(75))))
    got = events(client)
    assert [type(e) for e in got] == [MessageReceived, MessageReceived, ResponseEnded]
    assert got[-1] == ResponseEnded(
        stream_id, Status(StatusCode.INTERNAL, "the daemon reset the call (FLOW_CONTROL_ERROR)")
    )
    resets = [f for f in frames_in(client.data_to_send()) if f[0] == _RST_STREAM]
    assert resets == [(_RST_STREAM, 0, stream_id, (3).to_bytes(4, "big"))]  # FLOW_CONTROL_ERROR


def test_a_long_stream_never_stalls_on_the_windows_the_core_reopens() -> None:
    """More than the stream's and the connection's initial windows, the
    client acknowledging each message: the server never runs out of window."""
    client, server, stream_id = call_answered_with_headers(max_receive_message=64 * 1024)
    message = bytes(60 * 1024)
    received = 0
    for _ in range(40):  # 2.4 MiB: far past the 128 KiB stream window
        server.send_message(stream_id, message)
        for _ in range(5):
            if data := server.data_to_send():
                client.receive_data(data)
            for event in events(client):
                if isinstance(event, MessageReceived):
                    received += 1
                    client.acknowledge(stream_id, event.flow_controlled_length)
            if data := client.data_to_send():
                server.receive_data(data)
            events(server)
    assert received == 40
    assert server.pending(stream_id) == 0

"""The core's own DATA frames and outbound flow control, on bytes alone: a
large message is handed to the writer uncopied, small writes are joined, and
the peer's windows and frame size are respected, as an independent HTTP/2
frames read by hand or the client core (whose h2 checks what it receives)
see them."""

from __future__ import annotations

import random
import struct

import pytest

from rund_trio.rpc import (
    ConnectionClosed,
    GrpcConnection,
    MessageReceived,
    RemoteProtocolError,
    RequestReceived,
    ResponseEnded,
    Role,
    Status,
    StatusCode,
    StreamReset,
)
from rund_trio.wire.job_log import FramedMessage
from tests.rpc.test_core import events, exchange, pump

OK = Status(StatusCode.OK)
PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x1, 0x3


def framed(payload: bytes) -> FramedMessage:
    return FramedMessage(b"\0" + len(payload).to_bytes(4, "big") + payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return struct.pack(">HBBBL", 0, 4, 0x8, 0, stream_id) + increment.to_bytes(4, "big")


def open_call(client: GrpcConnection, server: GrpcConnection) -> int:
    stream_id = client.start_request("rund.Rund", "Log")
    client.send_message(stream_id, b"x")
    client.end_request(stream_id)
    exchange(client, server)
    return stream_id


def test_a_large_message_is_handed_to_the_writer_as_it_was_given() -> None:
    client = GrpcConnection(Role.CLIENT, max_receive_message=2 * 1024 * 1024)
    server = GrpcConnection(Role.SERVER)
    stream_id = open_call(client, server)
    message = framed(bytes(range(256)) * 4096)
    server.send_message(stream_id, message, framed=True)
    *before, last = server.buffers_to_send()
    assert last is message  # not a copy
    assert before[-1][-9:] == struct.pack(">HBBBL", len(message) >> 8, len(message) & 0xFF, 0, 0, 1)
    client.receive_data(b"".join([*before, last]))
    assert [e for e in events(client) if isinstance(e, MessageReceived)] == [
        MessageReceived(stream_id, message[5:], len(message))
    ]


def test_a_unary_answer_is_one_write() -> None:
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    stream_id = open_call(client, server)
    server.send_message(stream_id, b"answer")
    server.send_status(stream_id, OK)
    [write] = server.buffers_to_send()
    client.receive_data(write)
    assert events(client)[-1] == ResponseEnded(stream_id, OK)


@pytest.mark.parametrize("seed", range(4))
def test_interleaved_streams_each_stay_within_their_window_and_arrive_in_order(
    seed: int,
) -> None:
    """The client core's h2 checks every DATA frame against the windows it
    advertised (2 x 30 kB per stream): one byte too many breaks the connection."""
    rng = random.Random(seed)
    client = GrpcConnection(Role.CLIENT, max_receive_message=30_000)
    server = GrpcConnection(Role.SERVER)
    streams = [open_call(client, server) for _ in range(3)]
    sent: dict[int, list[bytes]] = {s: [] for s in streams}
    for _ in range(30):
        stream_id = rng.choice(streams)
        message = rng.randbytes(rng.randrange(0, 30_000))
        sent[stream_id].append(message)
        server.send_message(stream_id, framed(message), framed=True)
    for stream_id in streams:
        server.send_status(stream_id, OK)
    got: dict[int, list[bytes]] = {s: [] for s in streams}
    ended: set[int] = set()
    for _ in range(200):
        answers, _ = exchange(client, server, rng)
        for event in answers:
            if isinstance(event, MessageReceived):
                got[event.stream_id].append(event.data)
                client.acknowledge(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, ResponseEnded):
                assert event.status == OK
                ended.add(event.stream_id)
        if ended == set(streams):
            break
    assert got == sent


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each whole frame in ``data``."""
    found, at = [], 0
    while at < len(data):
        high, low, kind, flags, stream_id = struct.unpack_from(">HBBBL", data, at)
        length = high << 8 | low
        found.append((kind, flags, stream_id, data[at + 9 : at + 9 + length]))
        at += 9 + length
    assert at == len(data)
    return found


def test_the_peers_frame_size_and_windows_are_respected() -> None:
    """A client keeping HTTP/2's defaults (16 KiB frames, 64 KiB windows),
    its frames read by hand, granting 10 kB at a time."""
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    stream_id = client.start_request("rund.Rund", "Log")
    client.send_message(stream_id, b"x")
    client.end_request(stream_id)
    wire = client.data_to_send()
    kept = b"".join(  # the client core's own SETTINGS and WINDOW_UPDATE left out
        struct.pack(">HBBBL", len(payload) >> 8, len(payload) & 0xFF, kind, flags, sid) + payload
        for kind, flags, sid, payload in frames(wire[24:])
        if kind not in (0x4, 0x8)
    )
    server.receive_data(wire[:24] + struct.pack(">HBBBL", 0, 0, 0x4, 0, 0) + kept)
    assert isinstance(events(server)[0], RequestReceived)
    message = framed(bytes(range(256)) * 800)  # 204 805 bytes
    server.send_message(stream_id, message, framed=True)
    server.send_status(stream_id, OK)
    body, window, stream_window, ended = b"", 65_535, 65_535, False
    for _ in range(100):
        for kind, flags, sid, payload in frames(server.data_to_send()):
            if kind == 0x0 and sid == stream_id:
                assert len(payload) <= 16_384
                window -= len(payload)
                stream_window -= len(payload)
                assert window >= 0 and stream_window >= 0
                body += payload
            ended = ended or (kind == 0x1 and sid == stream_id and flags & 0x1 == 0x1)
        if ended:
            break
        server.receive_data(window_update(0, 10_000) + window_update(stream_id, 10_000))
        window += 10_000
        stream_window += 10_000
        events(server)
    assert body == message
    assert ended and server.pending(stream_id) == 0 and not server.is_open(stream_id)


def test_a_request_larger_than_the_default_window_goes_once_the_server_opens_it() -> None:
    """The client opens its call before the server's SETTINGS arrive (a 64 KiB
    window); the larger window they announce applies to that call at once."""
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    stream_id = client.start_request("rund.Rund", "Put")
    request = bytes(1_000_000)
    client.send_message(stream_id, request)
    client.end_request(stream_id)
    for _ in range(5):
        pump(client, server)
        seen = events(server)
        pump(server, client)
        events(client)
        if any(isinstance(e, MessageReceived) for e in seen):
            break
    assert MessageReceived(stream_id, request, len(request) + 5) in seen


def test_a_zero_window_update_on_a_stream_resets_only_that_stream() -> None:
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    stream_id = open_call(client, server)
    server.receive_data(window_update(stream_id, 0))
    assert events(server) == [StreamReset(stream_id, PROTOCOL_ERROR)]
    assert not server.is_open(stream_id)
    client.receive_data(server.data_to_send())  # the RST_STREAM
    [ended] = events(client)
    assert isinstance(ended, ResponseEnded) and ended.stream_id == stream_id


def test_a_window_past_2_to_the_31_on_a_stream_resets_it_with_flow_control_error() -> None:
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    stream_id = open_call(client, server)
    server.receive_data(window_update(stream_id, 2**31 - 1))
    assert events(server) == [StreamReset(stream_id, FLOW_CONTROL_ERROR)]


@pytest.mark.parametrize(
    "frame",
    [
        window_update(0, 0),
        window_update(0, 2**31 - 1),
        struct.pack(">HBBBL", 0, 3, 0x8, 0, 0) + b"\0\0\1",
    ],
    ids=["zero", "overflow", "short"],
)
def test_a_broken_connection_window_update_ends_the_connection_with_goaway(frame: bytes) -> None:
    client, server = GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER)
    open_call(client, server)
    server.receive_data(frame)
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    client.receive_data(server.data_to_send())  # the GOAWAY
    closed = client.next_event()
    assert isinstance(closed, ConnectionClosed) and "GOAWAY" in closed.reason

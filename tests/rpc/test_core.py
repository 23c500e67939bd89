"""The sans-I/O core on bytes alone: a client core and a server core talk
through nothing but ``data_to_send`` and ``receive_data``, the bytes cut
into seeded random pieces as a network would."""

from __future__ import annotations

import random

import pytest

from rund_trio.api import rund_pb2 as pb
from rund_trio.rpc import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    GrpcConnection,
    MessageReceived,
    RemoteProtocolError,
    RequestEnded,
    RequestReceived,
    RequestRefused,
    ResponseEnded,
    ResponseReceived,
    Role,
    Status,
    StatusCode,
    StreamRejected,
    StreamReset,
    _core,
    parse_timeout,
)
from tests.raw_grpc import raw_call


def pump(source: GrpcConnection, sink: GrpcConnection, rng: random.Random | None = None) -> None:
    """Move every byte ``source`` has queued to ``sink``, in random pieces."""
    while data := source.data_to_send():
        at = 0
        while at < len(data):
            size = rng.randint(1, 3000) if rng else len(data)
            sink.receive_data(data[at : at + size])
            at += size


def events(connection: GrpcConnection) -> list[Event]:
    found = []
    while (event := connection.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        found.append(event)
    return found


def exchange(
    client: GrpcConnection, server: GrpcConnection, rng: random.Random | None = None
) -> tuple[list[Event], list[Event]]:
    """Pump both ways until neither side has anything to say; the events each saw."""
    client_events: list[Event] = []
    server_events: list[Event] = []
    for _ in range(20):
        pump(client, server, rng)
        server_events += events(server)
        pump(server, client, rng)
        client_events += events(client)
    return client_events, server_events


def pair(**server_options: int) -> tuple[GrpcConnection, GrpcConnection]:
    return GrpcConnection(Role.CLIENT), GrpcConnection(Role.SERVER, **server_options)


@pytest.mark.parametrize("seed", range(5))
def test_a_unary_call_round_trips_whatever_the_bytes_are_cut_into(seed: int) -> None:
    rng = random.Random(seed)
    client, server = pair()
    request = bytes(rng.randrange(256) for _ in range(50_000))
    stream_id = client.start_request("pkg.Svc", "Echo", timeout=1.5)
    client.send_message(stream_id, request)
    client.end_request(stream_id)
    _, seen = exchange(client, server, rng)
    assert seen == [
        RequestReceived(stream_id, "pkg.Svc", "Echo", 1.5, (("user-agent", "rund-trio"),)),
        MessageReceived(stream_id, request, 5 + len(request)),
        RequestEnded(stream_id),
    ]
    server.send_message(stream_id, request[::-1])
    server.send_status(stream_id, Status(StatusCode.OK))
    answers, _ = exchange(client, server, rng)
    assert (
        answers
        == [
            ResponseReceived(stream_id),
            MessageReceived(stream_id, request[::-1], 5 + len(request)),
            ResponseEnded(stream_id, Status(StatusCode.OK)),
        ][: len(answers)]
    )
    assert answers[-1] == ResponseEnded(stream_id, Status(StatusCode.OK))
    assert b"".join(e.data for e in answers if isinstance(e, MessageReceived)) == request[::-1]


def test_a_data_frame_split_across_reads_is_read_by_the_core_not_h2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quadratic-buffer bug: a 4 MiB DATA frame arriving in 1000-byte
    pieces, its 9-byte header split across two reads. The core reads DATA
    itself: h2 never sees it (no buffer of h2's accumulates), the pieces are
    kept as they came and the message is copied out of them once, whole: the
    work is linear in the bytes."""
    handed: list[int] = []
    h2_connection_class = _core.h2.connection.H2Connection
    receive = h2_connection_class.receive_data

    def spy(self: object, data: bytes) -> object:
        handed.append(len(data))
        return receive(self, data)

    monkeypatch.setattr(h2_connection_class, "receive_data", spy)
    client = GrpcConnection(Role.CLIENT, max_receive_message=8 * 1024 * 1024)
    server = GrpcConnection(Role.SERVER)
    stream_id = client.start_request("pkg.Svc", "Log")
    client.send_message(stream_id, b"x")
    client.end_request(stream_id)
    exchange(client, server)
    handed.clear()
    message = bytes(4 * 1024 * 1024 - 5)
    server.send_message(stream_id, message)
    wire = b""
    while data := server.data_to_send():
        wire += data
    start = wire.index(message[:64]) - 5 - 9  # the DATA frame's header
    client.receive_data(wire[: start + 4])  # the header cut after 4 of its 9 bytes
    assert events(client) == [ResponseReceived(stream_id)]
    received = []
    for at in range(start + 4, len(wire), 1000):
        client.receive_data(wire[at : at + 1000])
        received += events(client)
    assert received[0] == MessageReceived(stream_id, message, len(message) + 5)
    assert [size for size in handed if size >= 1000] == []


@pytest.mark.parametrize("timeout", [0.0, 1e-7])
def test_a_grpc_timeout_of_zero_or_below_a_microsecond_is_a_deadline_not_none(
    timeout: float,
) -> None:
    client, server = pair()
    stream_id = client.start_request("pkg.Svc", "Wait", timeout=timeout)
    client.send_message(stream_id, b"")
    _, [received, *_] = exchange(client, server)
    assert isinstance(received, RequestReceived)
    assert received.timeout is not None and received.timeout == pytest.approx(timeout, rel=0.05)


@pytest.mark.parametrize(
    ("text", "seconds"), [("0S", 0.0), ("0n", 0.0), ("3n", 3e-9), ("2H", 7200)]
)
def test_grpc_timeouts_are_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_timeout(text) == pytest.approx(seconds)


def test_a_message_larger_than_the_cap_is_rejected_from_its_prefix() -> None:
    client, server = pair(max_receive_message=100)
    stream_id = client.start_request("pkg.Svc", "Put")
    client.send_message(stream_id, bytes(101))
    _, seen = exchange(client, server)
    assert seen[1] == StreamRejected(
        stream_id,
        Status(
            StatusCode.RESOURCE_EXHAUSTED,
            "the request message is 101 bytes; at most 100 bytes are accepted (--max-request-size)",
        ),
    )
    server.send_status(stream_id, seen[1].status)  # type: ignore[union-attr]
    answers, _ = exchange(client, server)
    assert answers[-1] == ResponseEnded(stream_id, seen[1].status)  # type: ignore[union-attr]


def test_a_request_naming_a_compression_is_refused_from_its_headers() -> None:
    client, server = pair()
    stream_id = client.start_request("pkg.Svc", "Put", metadata=(("grpc-encoding", "gzip"),))
    _, seen = exchange(client, server)
    [refused] = seen
    assert isinstance(refused, RequestRefused)
    assert (refused.stream_id, refused.path) == (stream_id, "/pkg.Svc/Put")
    assert refused.status.code is StatusCode.UNIMPLEMENTED
    answers, _ = exchange(client, server)
    assert answers == []  # (it went with the first exchange)


def test_a_reset_from_the_client_is_reported_to_the_server() -> None:
    client, server = pair()
    stream_id = client.start_request("pkg.Svc", "Log")
    client.send_message(stream_id, b"x")
    exchange(client, server)
    client.reset_stream(stream_id)
    _, seen = exchange(client, server)
    assert seen == [StreamReset(stream_id, 8)]  # CANCEL


def test_a_response_waits_for_the_client_window_and_goes_once_it_opens() -> None:
    client = GrpcConnection(Role.CLIENT, max_receive_message=1024 * 1024)  # 2 MiB window
    server = GrpcConnection(Role.SERVER)
    stream_id = client.start_request("pkg.Svc", "Log")
    client.send_message(stream_id, b"x")
    client.end_request(stream_id)
    exchange(client, server)
    for _ in range(3):
        server.send_message(stream_id, bytes(1000 * 1000))
    server.send_status(stream_id, Status(StatusCode.OK))
    received, _ = exchange(client, server)
    assert server.pending(stream_id) > 0  # unread: the window stays shut
    messages = [event for event in received if isinstance(event, MessageReceived)]
    assert len(messages) == 2
    for message in messages:
        client.acknowledge(stream_id, message.flow_controlled_length)
    received, _ = exchange(client, server)
    assert server.pending(stream_id) == 0
    assert isinstance(received[0], MessageReceived)
    assert received[-1] == ResponseEnded(stream_id, Status(StatusCode.OK))


def test_garbage_instead_of_the_preface_is_a_remote_protocol_error_with_goaway() -> None:
    server = GrpcConnection(Role.SERVER)
    server.data_to_send()
    server.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.data_to_send()  # the GOAWAY
    assert isinstance(server.next_event(), ConnectionClosed)


def test_the_end_of_the_bytes_closes_the_connection() -> None:
    server = GrpcConnection(Role.SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed("the peer closed the connection")


def answer_unary(client: GrpcConnection, server: GrpcConnection, status: Status) -> list[Event]:
    """One whole call: its request, then the server's message and ``status``."""
    stream_id = client.start_request("pkg.Svc", "Echo")
    client.send_message(stream_id, b"ask")
    client.end_request(stream_id)
    exchange(client, server)
    server.send_message(stream_id, b"answer")
    server.send_status(stream_id, status)
    answers, _ = exchange(client, server)
    return answers


def test_unary_calls_on_one_connection_are_not_held_to_the_cap_on_concurrent_streams() -> None:
    client, server = pair(max_concurrent_streams=2)
    for _ in range(50):  # each stream ends with its answer, in h2 too
        answers = answer_unary(client, server, Status(StatusCode.OK))
        assert answers[-1] == ResponseEnded(answers[-1].stream_id, Status(StatusCode.OK))


@pytest.mark.parametrize("size", [0, 1, 126, 127, 128, 300, 1000])
def test_a_status_message_of_any_length_is_read_back_whole(size: int) -> None:
    client, server = pair()
    status = Status(StatusCode.NOT_FOUND, ("no-job-é%\n" * 100)[:size])
    for _ in range(2):  # (nothing of the first answer stays in an HPACK table)
        answers = answer_unary(client, server, status)
        assert answers[1:] == [
            MessageReceived(answers[0].stream_id, b"answer", 11),
            ResponseEnded(answers[0].stream_id, status),
        ]


@pytest.mark.parametrize("table_size", [None, 0, 256, 8192])
def test_a_plain_h2_client_reads_the_answer_whatever_hpack_table_size_it_announces(
    table_size: int | None,
) -> None:
    h2_client, request = raw_call(
        "Status", pb.JobIdentifier(ulid="x"), header_table_size=table_size
    )
    server = GrpcConnection(Role.SERVER)
    server.receive_data(request)
    assert isinstance(events(server)[-1], RequestEnded)
    server.send_message(1, b"answer")
    server.send_status(1, Status(StatusCode.NOT_FOUND, "no job x"))
    received = h2_client.receive_data(server.data_to_send())  # h2 checks every header block
    headers = {
        type(event).__name__: dict(event.headers)
        for event in received
        if hasattr(event, "headers") and event.headers
    }
    assert headers["ResponseReceived"] == {b":status": b"200", b"content-type": b"application/grpc"}
    assert headers["TrailersReceived"] == {b"grpc-status": b"5", b"grpc-message": b"no job x"}
    assert "StreamEnded" in {type(event).__name__ for event in received}

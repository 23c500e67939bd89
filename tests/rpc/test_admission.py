"""The server's admission of connections (``rund_trio.server.admission``)
as ``GrpcServer`` applies it: handshake tickets in the accept loop (a shed
connection closed at once and reported to the observer as SHED), tickets
returned when the handshake ends however it ends, and the per-client cap
after the handshake."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rund_trio.errors import ConnectionFailed
from rund_trio.rpc import GrpcServer, TransportConfig, open_channel
from rund_trio.server.admission import Admission, AdmissionLimits, Shed
from rund_trio.server.calls import HandshakeOutcome
from tests.conftest import Pki
from tests.rpc.test_server import Recorder, decode, echo_service, text

NO_CAPS = AdmissionLimits(
    max_handshakes=None,
    max_handshakes_per_source=None,
    max_connections_per_client=None,
    fd_reserve=0,
)


def tls_server(
    pki: Pki, recorder: Recorder, limits: AdmissionLimits, **config: float
) -> GrpcServer:
    return GrpcServer(
        [echo_service()],
        pki.server_tls().server_context(),
        TransportConfig(**config),  # type: ignore[arg-type]
        observer=recorder,
        admission=Admission(limits),
    )


async def test_a_connection_beyond_the_handshake_cap_is_reset_and_observed_as_shed(
    nursery: trio.Nursery, pki: Pki
) -> None:
    recorder = Recorder()
    server = tls_server(pki, recorder, AdmissionLimits(max_handshakes=1, fd_reserve=0))
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    nursery.start_soon(server.serve_on, listener)
    with socket.create_connection(("127.0.0.1", port)) as holding:
        await trio.testing.wait_all_tasks_blocked()
        with socket.create_connection(("127.0.0.1", port)) as shed:
            await trio.testing.wait_all_tasks_blocked()
            try:
                closed = shed.recv(1, socket.MSG_DONTWAIT) == b""
            except ConnectionResetError:
                closed = True
            assert closed
            shed_peer = f"127.0.0.1:{shed.getsockname()[1]}"
        assert server.admission.shed[Shed.HANDSHAKES] == 1
        assert server.admission.handshakes == 1
        assert recorder.seen[-3:] == [
            ("opened", shed_peer),
            ("handshake", HandshakeOutcome.SHED),
            ("closed", shed_peer),
        ]
        assert ("opened", f"127.0.0.1:{holding.getsockname()[1]}") in recorder.seen
    await trio.testing.wait_all_tasks_blocked()
    assert server.admission.handshakes == 0, "the refused handshake gave its ticket back"


async def test_a_handshake_that_times_out_gives_its_ticket_back_at_its_timeout(
    autojump_clock: MockClock, nursery: trio.Nursery, pki: Pki
) -> None:
    recorder = Recorder()
    server = tls_server(pki, recorder, NO_CAPS, handshake_timeout=3.0)

    class OneConnection(trio.abc.Listener[trio.abc.Stream]):
        def __init__(self) -> None:
            self.client, self._server = trio.testing.memory_stream_pair()
            self._given = False

        async def accept(self) -> trio.abc.Stream:
            if self._given:
                await trio.sleep_forever()
            self._given = True
            return self._server

        async def aclose(self) -> None:
            pass

    listener = OneConnection()
    nursery.start_soon(server.serve_on, listener)
    await trio.testing.wait_all_tasks_blocked()
    began = trio.current_time()
    assert server.admission.handshakes == 1
    assert await listener.client.receive_some() == b""
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == began + 3.0
    assert server.admission.handshakes == 0
    assert ("handshake", HandshakeOutcome.TIMED_OUT) in recorder.seen


async def test_a_client_beyond_its_connection_cap_is_closed_after_its_handshake(
    nursery: trio.Nursery, pki: Pki
) -> None:
    recorder = Recorder()
    limits = AdmissionLimits(
        max_handshakes=None,
        max_handshakes_per_source=None,
        max_connections_per_client=1,
        fd_reserve=0,
    )
    server = tls_server(pki, recorder, limits)
    context = pki.client_tls("alice").client_context()
    first, first_server = trio.testing.memory_stream_pair()
    second, second_server = trio.testing.memory_stream_pair()
    nursery.start_soon(server.serve_connection, first_server, "memory:1")
    async with open_channel("localhost", 1, context, transport=first) as channel:
        assert await channel.unary_unary("test.Echo", "Upper", text("a"), decode) == "A"
        nursery.start_soon(server.serve_connection, second_server, "memory:2")
        async with open_channel("localhost", 1, context, transport=second) as refused:
            with pytest.raises(ConnectionFailed):
                await refused.unary_unary("test.Echo", "Upper", text("b"), decode)
        assert server.admission.shed[Shed.CLIENT] == 1
        assert await channel.unary_unary("test.Echo", "Upper", text("c"), decode) == "C"
    await trio.testing.wait_all_tasks_blocked()
    assert ("handshake", HandshakeOutcome.OK) in recorder.seen
    assert server.admission.by_client == {}, "each lease released"

"""The blocking client (``BlockingChannel``): unary calls over a real
loopback TCP connection to a server on trio, made from a worker thread, and
the same ``TransportFailed`` facts as the anyio channel when they fail."""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio

from rund_trio.errors import RpcError
from rund_trio.rpc import (
    GrpcServer,
    Stage,
    TransportFailed,
    open_blocking_channel,
    run_without_loop,
)
from tests.conftest import Pki
from tests.rpc.test_server import decode, echo_service, text


async def serving(nursery: trio.Nursery, context: ssl.SSLContext | None) -> int:
    """An echo server on 127.0.0.1 for the test; its port."""
    server = GrpcServer([echo_service()], context)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(server.serve_on, listeners[0])
    return int(listeners[0].socket.getsockname()[1])


async def in_thread(function: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(function)


async def test_unary_calls_on_one_blocking_connection(nursery: trio.Nursery, pki: Pki) -> None:
    port = await serving(nursery, pki.server_tls().server_context())
    context = pki.client_tls("alice").client_context()

    def calls() -> list[str]:
        with open_blocking_channel("127.0.0.1", port, context) as channel:
            return [channel.call("test.Echo", "Upper", text(word), decode) for word in "abc"]

    assert await in_thread(calls) == ["A", "B", "C"]


async def test_an_error_status_is_an_rpc_error_and_the_connection_serves_on(
    nursery: trio.Nursery, pki: Pki
) -> None:
    port = await serving(nursery, pki.server_tls().server_context())
    context = pki.client_tls("alice").client_context()

    def calls() -> tuple[str, str]:
        with open_blocking_channel("127.0.0.1", port, context) as channel:
            with pytest.raises(RpcError) as caught:
                channel.call("test.Echo", "NoSuchMethod", text("a"), decode)
            return caught.value.code, channel.call("test.Echo", "Upper", text("b"), decode)

    assert await in_thread(calls) == ("UNIMPLEMENTED", "B")


async def test_a_coroutine_on_a_blocking_channel_runs_without_an_event_loop(
    nursery: trio.Nursery, pki: Pki
) -> None:
    port = await serving(nursery, pki.server_tls().server_context())
    context = pki.client_tls("alice").client_context()

    def call() -> str:
        with open_blocking_channel("127.0.0.1", port, context) as channel:

            async def action() -> str:
                return await channel.unary_unary("test.Echo", "Upper", text("x"), decode)

            return run_without_loop(action())

    assert await in_thread(call) == "X"


def test_a_coroutine_that_suspends_is_refused_without_a_loop() -> None:
    class Suspend:
        def __await__(self) -> Any:
            yield

    async def suspends() -> None:
        await Suspend()

    with pytest.raises(RuntimeError, match="suspended"):
        run_without_loop(suspends())


def test_nothing_listening_is_a_connect_failure_with_the_os_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        with (
            pytest.raises(TransportFailed) as caught,
            open_blocking_channel("127.0.0.1", port, ssl.create_default_context()),
        ):
            pass
    assert caught.value.stage is Stage.CONNECT
    assert isinstance(caught.value.cause, ConnectionRefusedError)


async def test_a_daemon_certificate_the_ca_does_not_vouch_for_fails_the_handshake(
    nursery: trio.Nursery, pki: Pki
) -> None:
    port = await serving(nursery, pki.server_tls().server_context())
    stranger = ssl.create_default_context()  # the system's CAs, not the daemon's

    def connect() -> None:
        with open_blocking_channel("127.0.0.1", port, stranger):
            pass

    with pytest.raises(TransportFailed) as caught:
        await in_thread(connect)
    assert caught.value.stage is Stage.CONNECT
    assert isinstance(caught.value.cause, ssl.SSLCertVerificationError)


async def test_a_refused_client_certificate_ends_the_connection_before_the_peer_answered(
    nursery: trio.Nursery, pki: Pki
) -> None:
    port = await serving(nursery, pki.server_tls().server_context())
    without_certificate = ssl.create_default_context(cafile=str(pki.files.ca.cert))
    without_certificate.minimum_version = ssl.TLSVersion.TLSv1_3
    without_certificate.set_alpn_protocols(["h2"])

    def call() -> None:
        with open_blocking_channel("127.0.0.1", port, without_certificate) as channel:
            channel.call("test.Echo", "Upper", text("a"), decode)

    with pytest.raises(TransportFailed) as caught:
        await in_thread(call)
    assert caught.value.stage is Stage.CONNECTION
    assert not caught.value.peer_answered


async def test_a_tls_server_without_http2_is_a_protocol_failure(
    nursery: trio.Nursery, pki: Pki
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.files.server.cert, pki.files.server.key)  # no ALPN offered
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def tls_without_alpn() -> None:
        stream = await listeners[0].accept()
        tls = trio.SSLStream(stream, context, server_side=True)
        await tls.do_handshake()
        with contextlib.suppress(trio.BrokenResourceError):  # the client just hangs up
            await tls.receive_some()

    nursery.start_soon(tls_without_alpn)
    client_context = pki.client_tls("alice").client_context()

    def connect() -> None:
        with open_blocking_channel("localhost", port, client_context):
            pass

    with pytest.raises(TransportFailed) as caught:
        await in_thread(connect)
    assert (caught.value.stage, caught.value.alpn) == (Stage.PROTOCOL, None)


def test_the_blocking_client_imports_no_event_loop() -> None:
    """What makes a one-shot command start fast: it imports the blocking
    client, and neither anyio, asyncio nor trio comes with it."""
    import subprocess

    code = (
        "import sys; import rund_trio.client.api, rund_trio.rpc._blocking; "
        "print(sorted({'anyio', 'asyncio', 'trio'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

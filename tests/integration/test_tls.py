"""The daemon's TLS front door: only TLS 1.3 clients with a certificate from
its CA get through, and a silent client cannot hold a connection open."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import ConnectionFailed
from tests.conftest import Daemon, Pki, start_daemon


def client_context(daemon: Daemon, *, with_cert: bool = True) -> ssl.SSLContext:
    tls = daemon.pki.client_tls("alice")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    if with_cert:
        context.load_cert_chain(tls.cert, tls.key)
    return context


async def refused(daemon: Daemon, context: ssl.SSLContext) -> str:
    """Try a Status call with ``context``; return the client's error message."""
    with pytest.raises(ConnectionFailed) as error:
        async with RundClient.connect(daemon.addr, context) as rund:
            await rund.status("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    return str(error.value)


async def still_serving(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true"))
        assert len(job_id) == 26


async def test_a_client_without_certificate_is_refused(daemon: Daemon) -> None:
    await refused(daemon, client_context(daemon, with_cert=False))
    await still_serving(daemon)


async def test_a_client_certificate_from_another_ca_is_refused(daemon: Daemon) -> None:
    other_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    context = client_context(daemon, with_cert=False)
    other_ca.issue_cert("alice", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    await refused(daemon, context)
    await still_serving(daemon)


async def test_a_tls12_client_is_refused(daemon: Daemon) -> None:
    context = client_context(daemon)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert "TLS 1.3" in await refused(daemon, context)
    await still_serving(daemon)


async def test_a_server_from_another_ca_is_refused_by_the_client(daemon: Daemon) -> None:
    other_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    tls = daemon.pki.client_tls("alice")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    other_ca.configure_trust(context)
    context.load_cert_chain(tls.cert, tls.key)
    assert "self-signed certificate" in await refused(daemon, context)


async def test_a_silent_client_is_disconnected_after_the_handshake_timeout(
    fast_handshake_daemon: Daemon,
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", fast_handshake_daemon.port)
    with trio.fail_after(5):
        assert await stream.receive_some(1024) == b""
    await stream.aclose()
    await still_serving(fast_handshake_daemon)


async def test_the_daemon_serves_on_ipv6_loopback(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, addr="[::1]:0")
    assert daemon.running.addresses[0][0] == "::1"
    port = daemon.port
    async with RundClient.connect(
        f"[::1]:{port}", pki.client_tls("alice").client_context()
    ) as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true"))
    assert len(job_id) == 26

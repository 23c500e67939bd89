"""The daemon's TLS front door: only TLS 1.3 clients with a certificate from
its CA, for client authentication, in date, on a key of 192-bit strength get
through; the client accepts only a server certificate of the same kind; and a
silent client cannot hold a connection open.

Where the daemon refuses a client it does so in its TLS handshake (the daemon
logs ``TLS handshake failed: <reason>`` and never reads a request). With
TLS 1.3 the client has finished its own side of the handshake by then: it
learns of the refusal from the daemon's alert at its first read, before any
RPC is answered. Where the client refuses the server, it does so in its
handshake, before it sends anything."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import ConfigError, ConnectionFailed
from rund_trio.tls.certs import ClientSpec, generate_pki
from rund_trio.tls.context import TlsFiles
from tests.conftest import Daemon, Pki, start_daemon
from tests.odd_certs import DAY, SigningKey, issue, p256_key, rsa2048_key

UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def client_context(daemon: Daemon, *, with_cert: bool = True) -> ssl.SSLContext:
    tls = daemon.pki.client_tls("alice")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    if with_cert:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def lax_client_context(files: TlsFiles) -> ssl.SSLContext:
    """A client with OpenSSL's default policy (it would present weak or odd
    certificates the project's own client refuses to load)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)
    return context


async def refused(daemon: Daemon, context: ssl.SSLContext) -> str:
    """Try a Status call with ``context``; return the client's error message."""
    with pytest.raises(ConnectionFailed) as error:
        async with RundClient.connect(daemon.addr, context) as rund:
            await rund.status(UNKNOWN_JOB)
    return str(error.value)


@pytest.fixture
def handshake_failures(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """The reasons the daemon gave for the TLS handshakes it refused."""
    caplog.set_level(logging.INFO, logger="rund_trio.rpc")
    prefix = "TLS handshake failed: "

    def reasons() -> list[str]:
        return [
            record.getMessage().removeprefix(prefix)
            for record in caplog.records
            if record.getMessage().startswith(prefix)
        ]

    yield reasons


async def refused_in_handshake(
    daemon: Daemon, context: ssl.SSLContext, failures: Callable[[], list[str]]
) -> str:
    """Refused, and by the daemon's handshake: the reason the daemon logged."""
    await refused(daemon, context)
    [reason] = failures()
    return reason


async def still_serving(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true"))
        assert len(job_id) == 26


async def test_a_client_without_certificate_is_refused(
    daemon: Daemon, handshake_failures: Callable[[], list[str]]
) -> None:
    context = client_context(daemon, with_cert=False)
    reason = await refused_in_handshake(daemon, context, handshake_failures)
    assert "peer did not return a certificate" in reason
    await still_serving(daemon)


async def test_a_client_certificate_from_another_ca_is_refused(
    daemon: Daemon, tmp_path: Path, handshake_failures: Callable[[], list[str]]
) -> None:
    other = generate_pki(tmp_path / "other", clients=[ClientSpec("alice")])
    context = client_context(daemon, with_cert=False)
    context.load_cert_chain(other.clients["alice"].cert, other.clients["alice"].key)
    reason = await refused_in_handshake(daemon, context, handshake_failures)
    assert "certificate verify failed" in reason
    await still_serving(daemon)


async def test_an_expired_client_certificate_is_refused(
    daemon: Daemon, tmp_path: Path, handshake_failures: Callable[[], list[str]]
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = issue(daemon.pki, tmp_path, "alice", not_before=now - 10 * DAY, not_after=now - DAY)
    reason = await refused_in_handshake(daemon, lax_client_context(expired), handshake_failures)
    assert "certificate has expired" in reason
    await still_serving(daemon)


async def test_a_client_certificate_not_yet_valid_is_refused(
    daemon: Daemon, tmp_path: Path, handshake_failures: Callable[[], list[str]]
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    early = issue(daemon.pki, tmp_path, "alice", not_before=now + DAY, not_after=now + 10 * DAY)
    reason = await refused_in_handshake(daemon, lax_client_context(early), handshake_failures)
    assert "certificate is not yet valid" in reason
    await still_serving(daemon)


async def test_a_server_certificate_used_as_a_client_certificate_is_refused(
    daemon: Daemon, handshake_failures: Callable[[], list[str]]
) -> None:
    server = daemon.pki.server_tls()  # EKU serverAuth only
    reason = await refused_in_handshake(daemon, lax_client_context(server), handshake_failures)
    assert "unsuitable certificate purpose" in reason
    await still_serving(daemon)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        # The daemon's signature algorithms (security level 4) leave a P-256
        # key nothing to sign with: the client sends no certificate at all.
        pytest.param(p256_key, "peer did not return a certificate", id="P-256"),
        pytest.param(rsa2048_key, "key too weak", id="RSA-2048"),
    ],
)
async def test_a_client_key_weaker_than_192_bits_is_refused(
    daemon: Daemon,
    tmp_path: Path,
    handshake_failures: Callable[[], list[str]],
    key: Callable[[], SigningKey],
    reason: str,
) -> None:
    weak = issue(daemon.pki, tmp_path, "alice", key=key())
    assert reason in await refused_in_handshake(
        daemon, lax_client_context(weak), handshake_failures
    )
    await still_serving(daemon)


@pytest.mark.parametrize("group", ["prime256v1", "X25519"])
async def test_a_client_offering_only_weak_key_exchange_groups_is_refused(
    daemon: Daemon, handshake_failures: Callable[[], list[str]], group: str
) -> None:
    # The project's own client would not even offer these groups.
    context = lax_client_context(daemon.pki.client_tls("alice"))
    context.set_ecdh_curve(group)  # under OpenSSL 3: this group and no other
    reason = await refused_in_handshake(daemon, context, handshake_failures)
    assert "no suitable key share" in reason
    await still_serving(daemon)


@pytest.mark.parametrize("group", ["secp384r1", "secp521r1", "X448"])
async def test_a_client_offering_a_192_bit_group_is_served(daemon: Daemon, group: str) -> None:
    context = daemon.pki.client_tls("alice").client_context()
    context.set_ecdh_curve(group)
    async with RundClient.connect(daemon.addr, context) as rund:
        assert len(await rund.start(pb.JobStartRequest(name="true"))) == 26


async def test_a_client_certificate_used_as_the_server_certificate_is_refused_by_the_client(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    names = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    impostor = issue(pki, tmp_path, "localhost", usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=names)
    daemon = await start_daemon(nursery, pki, tmp_path, tls=impostor)
    message = await refused(daemon, pki.client_tls("alice").client_context())
    assert "unsuitable certificate purpose" in message


async def test_the_daemon_will_not_start_with_an_expired_certificate(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = issue(
        pki, tmp_path, "localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH, not_after=now - DAY
    )
    with pytest.raises(ConfigError, match=r"expired on"):
        await start_daemon(nursery, pki, tmp_path, tls=expired)


async def test_the_daemon_will_not_start_with_a_weak_key(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    weak = issue(pki, tmp_path, "localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH, key=p256_key())
    with pytest.raises(ConfigError, match=r"ECDSA key on secp256r1, too weak"):
        await start_daemon(nursery, pki, tmp_path, tls=weak)


async def impostor_server_refused(
    nursery: trio.Nursery, pki: Pki, server: TlsFiles
) -> tuple[str, BaseException | None]:
    """Serve TLS 1.3 with ``server`` (under OpenSSL's default policy, as a
    careless or hostile server would) and connect the project's client to it:
    the client's error message, and what the server's handshake raised."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(server.cert, server.key)
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")
    server_error: list[BaseException] = []

    async def handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as error:
            server_error.append(error.__cause__ or error)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handshake, listeners)
    port = listeners[0].transport_listener.socket.getsockname()[1]
    with pytest.raises(ConnectionFailed) as error:
        async with RundClient.connect(
            f"localhost:{port}", pki.client_tls("alice").client_context()
        ) as rund:
            await rund.status(UNKNOWN_JOB)
    return str(error.value), server_error[0] if server_error else None


async def test_an_expired_server_certificate_is_refused_by_the_client(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = issue(
        pki, tmp_path, "localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH, not_after=now - DAY
    )
    message, _ = await impostor_server_refused(nursery, pki, expired)
    assert "certificate has expired" in message


async def test_a_weak_server_key_is_refused_by_the_client(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    weak = issue(pki, tmp_path, "localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH, key=p256_key())
    _, server_error = await impostor_server_refused(nursery, pki, weak)
    # The client offers no signature algorithm a P-256 key can make.
    assert "no suitable signature algorithm" in str(server_error)


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

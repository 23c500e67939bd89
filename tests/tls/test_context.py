"""TLS 1.3-only mutual-TLS contexts: real handshakes in memory, and load errors."""

from __future__ import annotations

import datetime
import errno
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rund_trio.errors import ConfigError
from rund_trio.tls.certs import CertKeyPaths, ClientSpec, PkiFiles, generate_pki
from rund_trio.tls.context import (
    TlsFiles,
    TlsLabels,
    client_ssl_context,
    server_ssl_context,
)
from rund_trio.tls.identity import Identity, identity_from_der, identity_from_peer_certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    out = tmp_path_factory.mktemp("pki")
    return generate_pki(
        out, clients=[ClientSpec("client", extra_sans=("IP:::1",)), ClientSpec("anon", no_san=True)]
    )


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("other"), clients=[ClientSpec("client")])


def server_ctx(pki: PkiFiles) -> ssl.SSLContext:
    return server_ssl_context(pki.ca.cert, pki.server.cert, pki.server.key)


def client_ctx(pki: PkiFiles, client: str = "client") -> ssl.SSLContext:
    pair = pki.clients[client]
    return client_ssl_context(pki.ca.cert, pair.cert, pair.key)


@dataclass
class Handshake:
    """The two ends of a handshake pumped through memory BIOs."""

    client: ssl.SSLObject
    server: ssl.SSLObject
    errors: dict[str, ssl.SSLError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost"
) -> Handshake:
    """Run a handshake and one round trip of data, deterministically, in one thread.

    With TLS 1.3 the client finishes its handshake before the server has
    checked the client's certificate, so a rejection by the server shows up
    on the client only when it next reads; the round trip makes it visible.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    result = Handshake(
        client.wrap_bio(c_in, c_out, server_hostname=hostname),
        server.wrap_bio(s_in, s_out, server_side=True),
    )
    ends = {"client": (result.client, c_out, s_in), "server": (result.server, s_out, c_in)}
    done: set[str] = set()

    def step(side: str, action: str) -> None:
        obj, out, peer_in = ends[side]
        if side in result.errors:
            return
        try:
            if action == "handshake" and side not in done:
                obj.do_handshake()
                done.add(side)
            elif action == "ping" and side == "client":
                obj.write(b"ping")
            elif action == "read":
                assert obj.read(4) == (b"ping" if side == "server" else b"pong")
                if side == "server":
                    obj.write(b"pong")
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        except ssl.SSLError as error:
            result.errors[side] = error
        finally:
            peer_in.write(out.read())

    for _ in range(6):
        step("client", "handshake")
        step("server", "handshake")
    if done == {"client", "server"} and not result.errors:
        step("client", "ping")
        step("server", "read")
        step("client", "read")
    return result


def test_handshake_succeeds_with_tls13_and_h2(pki: PkiFiles) -> None:
    result = handshake(server_ctx(pki), client_ctx(pki))
    assert result.ok, result.errors
    assert result.client.version() == result.server.version() == "TLSv1.3"
    assert result.client.selected_alpn_protocol() == "h2"
    assert result.server.selected_alpn_protocol() == "h2"


def test_server_sees_the_client_identity(pki: PkiFiles) -> None:
    result = handshake(server_ctx(pki), client_ctx(pki))
    assert result.ok, result.errors
    identity = identity_from_peer_certificate(result.server.getpeercert())
    assert identity.sans == frozenset({"DNS:client", "IP:::1"})
    assert identity.common_name == "client"
    der = result.server.getpeercert(binary_form=True)
    assert der is not None
    assert identity_from_der(der) == identity


def test_client_without_san_is_accepted_but_anonymous(pki: PkiFiles) -> None:
    result = handshake(server_ctx(pki), client_ctx(pki, "anon"))
    assert result.ok, result.errors
    assert identity_from_peer_certificate(result.server.getpeercert()).is_anonymous


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_default_server_names_all_verify(pki: PkiFiles, hostname: str) -> None:
    assert handshake(server_ctx(pki), client_ctx(pki), hostname).ok


def test_hostname_mismatch_fails_on_the_client(pki: PkiFiles) -> None:
    result = handshake(server_ctx(pki), client_ctx(pki), "rund.example")
    assert "client" in result.errors
    assert "certificate verify failed" in str(result.errors["client"])


def test_client_without_certificate_is_rejected_by_the_server(pki: PkiFiles) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(pki.ca.cert)
    result = handshake(server_ctx(pki), bare)
    assert "server" in result.errors
    assert "certificate" in str(result.errors["server"]).lower()


def test_client_certificate_from_another_ca_is_rejected(pki: PkiFiles, other_pki: PkiFiles) -> None:
    foreign = other_pki.clients["client"]
    client = client_ssl_context(pki.ca.cert, foreign.cert, foreign.key)
    result = handshake(server_ctx(pki), client)
    assert "server" in result.errors
    assert "certificate verify failed" in str(result.errors["server"])


def test_server_from_another_ca_is_rejected_by_the_client(
    pki: PkiFiles, other_pki: PkiFiles
) -> None:
    result = handshake(server_ctx(other_pki), client_ctx(pki))
    assert "client" in result.errors
    assert "certificate verify failed" in str(result.errors["client"])


def test_tls12_client_is_rejected(pki: PkiFiles) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_verify_locations(pki.ca.cert)
    pair = pki.clients["client"]
    old.load_cert_chain(pair.cert, pair.key)
    result = handshake(server_ctx(pki), old)
    assert "server" in result.errors
    assert "unsupported protocol" in str(result.errors["server"]).lower()


def test_tls12_server_is_rejected(pki: PkiFiles) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_cert_chain(pki.server.cert, pki.server.key)
    result = handshake(old, client_ctx(pki))
    assert "client" in result.errors


def test_both_contexts_are_tls13_only_and_require_certificates(pki: PkiFiles) -> None:
    for ctx in (server_ctx(pki), client_ctx(pki)):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_ctx(pki).check_hostname


def test_tls_files_builds_both_contexts(pki: PkiFiles) -> None:
    server = TlsFiles(pki.ca.cert, pki.server.cert, pki.server.key).server_context()
    pair = pki.clients["client"]
    client = TlsFiles(pki.ca.cert, pair.cert, pair.key).client_context()
    assert handshake(server, client).ok


async def test_trio_ssl_streams_handshake_and_expose_the_peer(pki: PkiFiles) -> None:
    left, right = trio.testing.memory_stream_pair()
    server = trio.SSLStream(left, server_ctx(pki), server_side=True)
    client = trio.SSLStream(right, client_ctx(pki), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    assert server.selected_alpn_protocol() == "h2"
    assert identity_from_peer_certificate(server.getpeercert()).shares_san_with(
        Identity.of("DNS:CLIENT")
    )


# --- load errors -------------------------------------------------------------


def error_of(ca: Path, cert: Path, key: Path, **kw: TlsLabels) -> str:
    with pytest.raises(ConfigError) as info:
        server_ssl_context(ca, cert, key, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_cert_names_flag_file_reason_and_hint(pki: PkiFiles, tmp_path: Path) -> None:
    missing = tmp_path / "server.pem"
    message = error_of(pki.ca.cert, missing, pki.server.key)
    assert message == (
        f"cannot read --cert {missing}: No such file or directory "
        "(run `rund-trio certs` to create a development PKI)"
    )


def test_missing_ca_and_key_name_their_flags(pki: PkiFiles, tmp_path: Path) -> None:
    assert error_of(tmp_path / "x", pki.server.cert, pki.server.key).startswith(
        f"cannot read --ca {tmp_path / 'x'}: No such file"
    )
    assert error_of(pki.ca.cert, pki.server.cert, tmp_path / "k").startswith(
        f"cannot read --key {tmp_path / 'k'}: No such file"
    )


def test_labels_name_the_callers_flags(pki: PkiFiles, tmp_path: Path) -> None:
    labels = TlsLabels(ca="--tls-ca", cert="--tls-cert", key="--tls-key")
    message = error_of(pki.ca.cert, tmp_path / "nope.pem", pki.server.key, labels=labels)
    assert message.startswith(f"cannot read --tls-cert {tmp_path / 'nope.pem'}:")


def test_directory_instead_of_file(pki: PkiFiles, tmp_path: Path) -> None:
    message = error_of(tmp_path, pki.server.cert, pki.server.key)
    assert message == f"cannot read --ca {tmp_path}: Is a directory"


def test_unreadable_file(pki: PkiFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key.pem"
    secret.write_bytes(pki.server.key.read_bytes())
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads any file: fake the refusal
        real = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == secret:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    message = error_of(pki.ca.cert, pki.server.cert, secret)
    assert message == f"cannot read --key {secret}: Permission denied"


def test_garbage_ca(pki: PkiFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_bytes(b"hello\n")
    message = error_of(garbage, pki.server.cert, pki.server.key)
    assert message == f"--ca {garbage} is not a PEM certificate file"


def test_garbage_cert(pki: PkiFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "server.pem"
    garbage.write_bytes(b"\x00\x01binary")
    message = error_of(pki.ca.cert, garbage, pki.server.key)
    assert message == f"--cert {garbage} is not a PEM certificate file"


def test_garbage_key(pki: PkiFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "server-key.pem"
    garbage.write_text("not a key")
    message = error_of(pki.ca.cert, pki.server.cert, garbage)
    assert message == f"--key {garbage} is not a PEM private key"


def test_certificate_given_as_key(pki: PkiFiles) -> None:
    message = error_of(pki.ca.cert, pki.server.cert, pki.server.cert)
    assert message == f"--key {pki.server.cert} is not a PEM private key"


def test_encrypted_key(pki: PkiFiles, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), None)
    encrypted = tmp_path / "enc-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    message = error_of(pki.ca.cert, pki.server.cert, encrypted)
    assert message == f"--key {encrypted} is encrypted; rund-trio needs an unencrypted key"


def test_key_that_does_not_match_cert(pki: PkiFiles) -> None:
    other_key = pki.clients["client"].key
    message = error_of(pki.ca.cert, pki.server.cert, other_key)
    assert message == (
        f"--key {other_key} does not match --cert {pki.server.cert} (they are not a key pair)"
    )


def test_expired_cert(pki: PkiFiles, tmp_path: Path) -> None:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    key = ec.generate_private_key(ec.SECP384R1())
    pair = pair_on(pki, tmp_path, key, valid=(past, past + datetime.timedelta(days=1)))
    message = error_of(pki.ca.cert, pair.cert, pair.key)
    assert message.startswith(f"--cert {pair.cert} expired on 2020-01-02 00:00 UTC")


def test_client_context_reports_errors_the_same_way(pki: PkiFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read --ca .*: No such file or directory"):
        client_ssl_context(tmp_path / "ca.pem", pki.server.cert, pki.server.key)


def pair_on(
    pki: PkiFiles,
    tmp_path: Path,
    key: ec.EllipticCurvePrivateKey,
    valid: tuple[datetime.datetime, datetime.datetime] | None = None,
) -> CertKeyPaths:
    """A client certificate from ``pki``'s CA on ``key``, valid from yesterday
    to tomorrow unless ``valid`` says otherwise."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = valid or (
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=1),
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA512())
    )
    pair = CertKeyPaths(tmp_path / "client.pem", tmp_path / "client-key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


def test_a_client_will_not_load_a_key_weaker_than_192_bits(pki: PkiFiles, tmp_path: Path) -> None:
    pair = pair_on(pki, tmp_path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError) as info:
        client_ssl_context(pki.ca.cert, pair.cert, pair.key)
    assert str(info.value) == (
        f"--key {pair.key} is an ECDSA key on secp256r1, too weak: rund-trio needs "
        "192-bit security, an ECDSA key on P-384 or P-521 "
        "(run `rund-trio certs` to create a development PKI)"
    )


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()], ids=["P-384", "P-521"])
def test_p384_and_p521_keys_are_strong_enough(
    pki: PkiFiles, tmp_path: Path, curve: ec.EllipticCurve
) -> None:
    pair = pair_on(pki, tmp_path, ec.generate_private_key(curve))
    assert handshake(server_ctx(pki), client_ssl_context(pki.ca.cert, pair.cert, pair.key)).ok

"""The development PKI: what each certificate says, file modes, reuse and errors."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from rund_trio.errors import ConfigError
from rund_trio.tls.certs import (
    CertificateAuthority,
    CertKeyPaths,
    ClientSpec,
    PkiFiles,
    generate_pki,
    issue_client,
    parse_san,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    out = tmp_path_factory.mktemp("pki") / "tls"
    return generate_pki(out, clients=[ClientSpec("client")])


def test_ca_is_p521_sha512_with_critical_ca_constraints(pki: PkiFiles) -> None:
    ca = load(pki.ca.cert)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP521R1)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA512)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert constraints.value.path_length == 0  # it signs leaves, never another CA
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.verify_directly_issued_by(ca)


def test_server_cert_is_p521_serverauth_signed_by_ca(pki: PkiFiles) -> None:
    ca, server = load(pki.ca.cert), load(pki.server.cert)
    server.verify_directly_issued_by(ca)
    key = server.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP521R1)
    assert isinstance(server.signature_hash_algorithm, hashes.SHA512)
    usage = server.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    constraints = server.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_server_sans_detect_ip_addresses(pki: PkiFiles) -> None:
    assert sans(load(pki.server.cert)) == [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def test_client_cert_is_p521_clientauth_with_cn_and_dns_san(pki: PkiFiles) -> None:
    ca, client = load(pki.ca.cert), load(pki.clients["client"].cert)
    client.verify_directly_issued_by(ca)
    key = client.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP521R1)
    assert isinstance(client.signature_hash_algorithm, hashes.SHA512)
    usage = client.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.subject.rfc4514_string().startswith("CN=client")
    assert sans(client) == [x509.DNSName("client")]


def test_private_keys_are_0600_certs_0644_and_dir_0700(pki: PkiFiles) -> None:
    assert mode(pki.out_dir) == 0o700
    for pair in (pki.ca, pki.server, *pki.clients.values()):
        assert mode(pair.key) == 0o600, pair.key
        assert mode(pair.cert) == 0o644, pair.cert


def test_keys_are_never_created_with_a_wider_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        opened.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    chmods: list[object] = []
    monkeypatch.setattr(os, "chmod", lambda *a, **k: chmods.append(a))
    generate_pki(tmp_path / "tls", clients=[ClientSpec("a")])
    key_modes = {mode for path, mode in opened if path.endswith("-key.pem")}
    assert key_modes == {0o600}
    assert chmods == []


def test_keys_stay_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = generate_pki(tmp_path / "tls", clients=[ClientSpec("a")])
    finally:
        os.umask(old)
    assert mode(files.ca.key) == 0o600
    assert mode(files.clients["a"].key) == 0o600
    assert mode(files.out_dir) == 0o700


def test_certs_are_0644_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        files = generate_pki(tmp_path / "tls", clients=[ClientSpec("a")])
    finally:
        os.umask(old)
    assert mode(files.server.cert) == 0o644


def test_existing_out_dir_mode_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    out.mkdir(mode=0o755)
    os.chmod(out, 0o755)
    generate_pki(out, clients=[])
    assert mode(out) == 0o755


def test_second_run_reuses_ca_and_adds_only_the_new_client(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    first = generate_pki(out, clients=[ClientSpec("alice")])
    ca_before = first.ca.cert.read_bytes()
    server_before = first.server.cert.read_bytes()
    second = generate_pki(out, clients=[ClientSpec("alice"), ClientSpec("bob")])
    assert second.ca_reused
    assert first.ca.cert.read_bytes() == ca_before
    assert first.server.cert.read_bytes() == server_before
    assert second.written == (out / "bob-key.pem", out / "bob.pem")
    assert set(second.skipped) == {
        out / "ca.pem",
        out / "ca-key.pem",
        out / "server.pem",
        out / "server-key.pem",
        out / "alice.pem",
        out / "alice-key.pem",
    }
    load(out / "bob.pem").verify_directly_issued_by(load(out / "ca.pem"))


def test_first_run_reports_every_file_written(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    files = generate_pki(out, clients=[ClientSpec("a")])
    assert not files.ca_reused
    assert files.skipped == ()
    assert {p.name for p in files.written} == {
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "a.pem",
        "a-key.pem",
    }


def test_overwrite_replaces_the_ca_and_every_leaf(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    first = generate_pki(out, clients=[ClientSpec("a")])
    ca_before = first.ca.cert.read_bytes()
    second = generate_pki(out, clients=[ClientSpec("a")], overwrite=True)
    assert first.ca.cert.read_bytes() != ca_before
    assert len(second.written) == 6 and second.skipped == ()
    load(out / "a.pem").verify_directly_issued_by(load(out / "ca.pem"))
    assert mode(out / "a-key.pem") == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in second.written)


def test_leaf_from_a_vanished_ca_is_an_error_not_silently_kept(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    generate_pki(out, clients=[ClientSpec("a")])
    (out / "ca.pem").unlink()
    (out / "ca-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"server\.pem exists but .*ca\.pem does not"):
        generate_pki(out, clients=[ClientSpec("a")])


def test_leaf_signed_by_another_ca_is_an_error(tmp_path: Path) -> None:
    out, other = tmp_path / "tls", tmp_path / "other"
    generate_pki(out, clients=[ClientSpec("a")])
    generate_pki(other, clients=[ClientSpec("a")])
    (out / "a.pem").write_bytes((other / "a.pem").read_bytes())
    with pytest.raises(ConfigError, match=r"a\.pem was not issued by"):
        generate_pki(out, clients=[ClientSpec("a")])


def test_kept_key_that_does_not_match_its_cert_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    generate_pki(out, clients=[ClientSpec("a"), ClientSpec("b")])
    (out / "a-key.pem").write_bytes((out / "b-key.pem").read_bytes())
    with pytest.raises(ConfigError, match=r"a-key\.pem does not match .*a\.pem"):
        generate_pki(out, clients=[ClientSpec("a")])


def test_half_a_pair_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    generate_pki(out, clients=[ClientSpec("a")])
    (out / "a-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"a\.pem exists but .*a-key\.pem does not"):
        generate_pki(out, clients=[ClientSpec("a")])


def test_email_client_name_gets_an_email_san(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[ClientSpec("bob@example.com")])
    cert = load(files.clients["bob@example.com"].cert)
    assert sans(cert) == [x509.RFC822Name("bob@example.com")]
    assert files.clients["bob@example.com"].cert.name == "bob@example.com.pem"


def test_extra_sans_of_every_form_follow_the_default(tmp_path: Path) -> None:
    spec = ClientSpec(
        "ops",
        extra_sans=("DNS:ops.example", "email:ops@example.com", "URI:spiffe://x/ops", "IP:::1"),
    )
    files = generate_pki(tmp_path, clients=[spec])
    assert sans(load(files.clients["ops"].cert)) == [
        x509.DNSName("ops"),
        x509.DNSName("ops.example"),
        x509.RFC822Name("ops@example.com"),
        x509.UniformResourceIdentifier("spiffe://x/ops"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def test_no_san_client_has_no_san_extension(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[ClientSpec("anon", no_san=True)])
    cert = load(files.clients["anon"].cert)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "CN=anon" in cert.subject.rfc4514_string()


def test_no_san_with_extra_sans_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both no SAN and extra SANs"):
        generate_pki(tmp_path, clients=[ClientSpec("x", extra_sans=("DNS:y",), no_san=True)])


def test_p384_server_curve(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[], server_curve="P-384")
    key = load(files.server.cert).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP384R1)
    assert isinstance(load(files.server.cert).signature_hash_algorithm, hashes.SHA512)


def test_custom_server_names(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[], server_names=["rund.example", "10.1.2.3"])
    cert = load(files.server.cert)
    assert sans(cert) == [
        x509.DNSName("rund.example"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
    ]
    assert "CN=rund.example" in cert.subject.rfc4514_string()


def test_validity_days_is_honoured(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[], valid_days=3)
    cert = load(files.server.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3 * 86400 <= lifetime.total_seconds() <= 3 * 86400 + 600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DNS:a.example", x509.DNSName("a.example")),
        ("dns:a.example", x509.DNSName("a.example")),
        ("email:a@b.c", x509.RFC822Name("a@b.c")),
        ("URI:https://a/b?c=d", x509.UniformResourceIdentifier("https://a/b?c=d")),
        ("IP:10.0.0.1", x509.IPAddress(ipaddress.ip_address("10.0.0.1"))),
        ("IP:0:0:0:0:0:0:0:1", x509.IPAddress(ipaddress.ip_address("::1"))),
    ],
)
def test_parse_san_forms(text: str, expected: x509.GeneralName) -> None:
    assert parse_san(text) == expected


@pytest.mark.parametrize("text", ["a.example", "DNS:", "IP:not-an-ip", "X400:x", "DNS:é.fr"])
def test_parse_san_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="SAN"):
        parse_san(text)


@pytest.mark.parametrize("name", ["", "ca", "server", "a-key", "../evil", "a/b", ".hidden", "a b"])
def test_client_names_that_would_collide_or_escape_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="client name"):
        generate_pki(tmp_path / "tls", clients=[ClientSpec(name)])
    assert not (tmp_path / "tls").exists()


def test_duplicate_clients_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="more than once"):
        generate_pki(tmp_path, clients=[ClientSpec("a"), ClientSpec("a")])


def test_out_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "tls").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        generate_pki(tmp_path / "tls", clients=[])


def test_issue_client_from_existing_ca_into_another_dir(tmp_path: Path) -> None:
    files = generate_pki(tmp_path / "tls", clients=[])
    paths = issue_client(files.ca, ClientSpec("late"), tmp_path / "elsewhere")
    assert paths == CertKeyPaths(
        tmp_path / "elsewhere/late.pem", tmp_path / "elsewhere/late-key.pem"
    )
    load(paths.cert).verify_directly_issued_by(load(files.ca.cert))
    assert mode(paths.key) == 0o600
    assert mode(tmp_path / "elsewhere") == 0o700
    with pytest.raises(ConfigError, match="already exists"):
        issue_client(files.ca, ClientSpec("late"), tmp_path / "elsewhere")


def test_loading_a_non_ca_as_ca_is_an_error(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[])
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        CertificateAuthority.load(files.server.cert, files.server.key)


def test_loading_a_ca_with_the_wrong_key_is_an_error(tmp_path: Path) -> None:
    files = generate_pki(tmp_path, clients=[])
    with pytest.raises(ConfigError, match="does not match"):
        CertificateAuthority.load(files.ca.cert, files.server.key)


def test_leaf_never_outlives_its_ca() -> None:
    ca = CertificateAuthority.create(valid_days=2)
    leaf = ca.issue_client(ClientSpec("a"), valid_days=30)
    assert leaf.certificate.not_valid_after_utc <= ca.certificate.not_valid_after_utc

"""Peer identities: SAN normalization, sharing, anonymity."""

from __future__ import annotations

from typing import Any

import pytest

from rund_trio.tls.certs import CertificateAuthority, ClientSpec
from rund_trio.tls.identity import (
    Identity,
    identity_from_der,
    identity_from_peer_certificate,
    normalize_san,
    parse_san,
)


def peer(*sans: tuple[str, str], cn: str | None = None) -> dict[str, Any]:
    cert: dict[str, Any] = {"subjectAltName": sans}
    if cn is not None:
        cert["subject"] = ((("organizationName", "x"),), (("commonName", cn),))
    return cert


def test_dns_is_lower_cased_and_loses_its_trailing_dot() -> None:
    assert identity_from_peer_certificate(peer(("DNS", "Client.Example."))).sans == {
        "DNS:client.example"
    }


@pytest.mark.parametrize("spelling", ["::1", "0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1\n"])
def test_ipv6_spellings_normalize_to_one(spelling: str) -> None:
    identity = identity_from_peer_certificate(peer(("IP Address", spelling)))
    assert identity.sans == {"IP:::1"}


def test_ipv6_uppercase_hex_as_ssl_prints_it() -> None:
    identity = identity_from_peer_certificate(peer(("IP Address", "2001:DB8:0:0:0:0:0:A")))
    assert identity.sans == {"IP:2001:db8::a"}


def test_ipv4_is_kept_canonical() -> None:
    assert identity_from_peer_certificate(peer(("IP Address", "127.0.0.1"))).sans == {
        "IP:127.0.0.1"
    }


def test_email_domain_is_lower_cased_local_part_kept() -> None:
    identity = identity_from_peer_certificate(peer(("email", "Bob@Example.COM")))
    assert identity.sans == {"email:Bob@example.com"}


def test_uri_is_kept_verbatim() -> None:
    identity = identity_from_peer_certificate(peer(("URI", "spiffe://Example/Ops")))
    assert identity.sans == {"URI:spiffe://Example/Ops"}


def test_unsupported_kinds_and_bad_ips_are_ignored() -> None:
    identity = identity_from_peer_certificate(
        peer(
            ("DirName", "((('commonName', 'x'),),)"),
            ("othername", "<unsupported>"),
            ("Registered ID", "1.2.3"),
            ("IP Address", "<invalid>"),
            ("DNS", "ok"),
        )
    )
    assert identity.sans == {"DNS:ok"}


def test_common_name_is_kept_for_logs() -> None:
    assert identity_from_peer_certificate(peer(("DNS", "a"), cn="alice")).common_name == "alice"


@pytest.mark.parametrize("cert", [None, {}, {"subject": ()}])
def test_no_certificate_or_no_san_is_anonymous(cert: dict[str, Any] | None) -> None:
    identity = identity_from_peer_certificate(cert)
    assert identity.is_anonymous
    assert identity.sans == frozenset()


def test_sharing_needs_one_common_san() -> None:
    a = Identity.of("DNS:a", "IP:::1")
    b = Identity.of("IP:0:0:0:0:0:0:0:1", "DNS:b")
    c = Identity.of("DNS:c")
    assert a.shares_san_with(b) and b.shares_san_with(a)
    assert not a.shares_san_with(c)


def test_anonymous_never_shares_even_with_anonymous() -> None:
    anonymous = Identity()
    assert not anonymous.shares_san_with(Identity())
    assert not anonymous.shares_san_with(Identity.of("DNS:a"))
    assert not Identity.of("DNS:a").shares_san_with(anonymous)


def test_common_name_alone_never_shares() -> None:
    assert not Identity(common_name="x").shares_san_with(Identity(common_name="x"))


def test_str_is_short_and_sorted() -> None:
    assert str(Identity.of("DNS:b", "DNS:a")) == "DNS:a,DNS:b"
    many = Identity.of("DNS:a", "DNS:b", "DNS:c", "DNS:d", "DNS:e")
    assert str(many) == "DNS:a,DNS:b,DNS:c,+2 more"
    assert str(Identity()) == "anonymous"
    assert str(Identity(common_name="anon")) == "anonymous(CN=anon)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dns:A.Example", "DNS:a.example"),
        ("IP:0:0:0:0:0:0:0:1", "IP:::1"),
        ("Email:x@Y.Z", "email:x@y.z"),
        ("uri:https://h/p", "URI:https://h/p"),
    ],
)
def test_parse_san_normalizes(text: str, expected: str) -> None:
    assert parse_san(text) == expected


@pytest.mark.parametrize("text", ["nocolon", "X400:x", "DNS:", "IP:nope"])
def test_parse_san_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="SAN"):
        parse_san(text)


def test_normalize_san_returns_none_for_unknown_kinds() -> None:
    assert normalize_san("DirName", "x") is None


def test_identity_from_der_reads_every_san_form() -> None:
    ca = CertificateAuthority.create(valid_days=1)
    issued = ca.issue_client(
        ClientSpec(
            "Ops",
            extra_sans=("IP:0:0:0:0:0:0:0:1", "email:ops@Example.com", "URI:spiffe://x/ops"),
        ),
        valid_days=1,
    )
    from cryptography.hazmat.primitives import serialization

    identity = identity_from_der(issued.certificate.public_bytes(serialization.Encoding.DER))
    assert identity == Identity(
        frozenset({"DNS:ops", "IP:::1", "email:ops@example.com", "URI:spiffe://x/ops"}),
        common_name="Ops",
    )


def test_identity_from_der_without_san_is_anonymous() -> None:
    ca = CertificateAuthority.create(valid_days=1)
    issued = ca.issue_client(ClientSpec("anon", no_san=True), valid_days=1)
    from cryptography.hazmat.primitives import serialization

    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert identity_from_der(der).is_anonymous

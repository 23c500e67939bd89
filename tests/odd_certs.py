"""Certificates the project's generator would never make: expired, not yet
valid, with the wrong extended key usage, on weak keys -- signed by a test
PKI's own CA, so that only the one thing that is odd about them differs."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rund_trio.tls.certs import CertificateAuthority
from rund_trio.tls.context import TlsFiles
from tests.conftest import Pki

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
DAY = datetime.timedelta(days=1)


def p256_key() -> SigningKey:
    return ec.generate_private_key(ec.SECP256R1())


def p521_key() -> SigningKey:
    return ec.generate_private_key(ec.SECP521R1())


def rsa2048_key() -> SigningKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(
    pki: Pki,
    out: Path,
    name: str,
    *,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    sans: tuple[x509.GeneralName, ...] | None = None,
    key: SigningKey | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> TlsFiles:
    """A certificate for ``name`` (SAN ``DNS:name`` unless ``sans`` is given)
    signed by ``pki``'s CA, written to ``out/NAME.pem`` and ``out/NAME-key.pem``;
    valid for the two days before ``not_after`` (default: tomorrow)."""
    ca = CertificateAuthority.load(pki.files.ca.cert, pki.files.ca.key)
    key = key if key is not None else p521_key()
    not_after = not_after or datetime.datetime.now(datetime.UTC) + DAY
    not_before = not_before or not_after - 2 * DAY
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(list(sans or (x509.DNSName(name),))), critical=False
        )
        .sign(ca.private_key, hashes.SHA512())
    )
    files = TlsFiles(ca=pki.files.ca.cert, cert=out / f"{name}.pem", key=out / f"{name}-key.pem")
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files

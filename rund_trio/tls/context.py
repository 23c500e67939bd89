"""SSL contexts for mutual TLS between the daemon and its clients.

Both sides speak TLS 1.3 only, offer ALPN ``h2`` (gRPC), and trust nothing but
the given CA (never the system store). The server requires a client
certificate issued by that CA; the client checks the server's certificate and
its host name. OpenSSL checks the extended key usage of the peer's
certificate: serverAuth for a server, clientAuth for a client.

**192-bit security, enforced by OpenSSL.** Both sides run at OpenSSL security
level 4 (``@SECLEVEL=4``): every key in the peer's chain must offer at least
192 bits of security -- ECDSA P-384 or P-521 in practice (RSA would need 7680
bits, Ed448 passes) -- and only key-exchange groups that strong are offered
and accepted (P-384, P-521, X448; never X25519 or P-256). A peer that falls
short fails in the handshake. Not ``set_ecdh_curve``: under OpenSSL 3 it
replaces the whole group list with that single curve (TLS 1.3 included), so
P-384 alone would lock out P-521 and X448. Our own key is checked the same way
when it is loaded, with a readable error. grpcio (BoringSSL) offers P-384, so
it still connects (after a HelloRetryRequest).

Every file is read and checked here before :mod:`ssl` sees it, so that a
wrong path or a wrong file is reported as one :class:`~rund_trio.errors.ConfigError`
line naming the flag, the file and the reason, for example::

    cannot read --cert tls/server.pem: No such file or directory (run `rund-trio certs` to create a development PKI)
"""  # noqa: E501

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from rund_trio.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "ALPN_PROTOCOLS",
    "PKI_HINT",
    "TlsFiles",
    "TlsLabels",
    "client_ssl_context",
    "load_ca_certificates",
    "load_certificate",
    "load_private_key",
    "server_ssl_context",
]

ALPN_PROTOCOLS = ("h2",)
PKI_HINT = "run `rund-trio certs` to create a development PKI"
SECURITY_LEVEL = 4
"""OpenSSL's security level: 192 bits for keys, groups and signatures."""
# TLS 1.2 suites never apply (TLS 1.3 only); the list only carries the level.
_CIPHERS = f"ECDHE+AESGCM:@SECLEVEL={SECURITY_LEVEL}"

StrPath = str | os.PathLike[str]


class TlsLabels(NamedTuple):
    """How error messages name each file: the command-line flag that gave it."""

    ca: str = "--ca"
    cert: str = "--cert"
    key: str = "--key"


DEFAULT_LABELS = TlsLabels()


class TlsFiles(NamedTuple):
    """The three files of one side of a mutual-TLS connection, with their labels."""

    ca: Path
    cert: Path
    key: Path
    labels: TlsLabels = DEFAULT_LABELS

    def server_context(self) -> ssl.SSLContext:
        """:func:`server_ssl_context` for these files."""
        return server_ssl_context(self.ca, self.cert, self.key, labels=self.labels)

    def client_context(self) -> ssl.SSLContext:
        """:func:`client_ssl_context` for these files."""
        return client_ssl_context(self.ca, self.cert, self.key, labels=self.labels)


def _describe(label: str | None, path: Path) -> str:
    return f"{label} {path}" if label else str(path)


def _read(path: Path, label: str | None) -> bytes:
    """Read a whole file, or raise ConfigError naming it and the OS reason."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"cannot read {_describe(label, path)}: No such file or directory ({PKI_HINT})"
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot read {_describe(label, path)}: {reason}") from None


def load_ca_certificates(path: StrPath, label: str | None = None) -> list[x509.Certificate]:
    """Read a PEM file of one or more certificates (a CA bundle).

    Raises ConfigError (one line naming ``label`` and ``path``) if the file
    cannot be read or holds no PEM certificate.
    """
    from cryptography import x509

    path = Path(path)
    data = _read(path, label)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigError(f"{_describe(label, path)} is not a PEM certificate file")
    return certificates


def load_certificate(path: StrPath, label: str | None = None) -> x509.Certificate:
    """Read the first certificate of a PEM file (a leaf certificate, maybe with its chain).

    Raises ConfigError (one line naming ``label`` and ``path``) if the file
    cannot be read or holds no PEM certificate.
    """
    return load_ca_certificates(path, label)[0]


def load_private_key(path: StrPath, label: str | None = None) -> PrivateKeyTypes:
    """Read an unencrypted PEM private key.

    Raises ConfigError (one line naming ``label`` and ``path``) if the file
    cannot be read, is encrypted, or is not a PEM private key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read(path, label)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{_describe(label, path)} is encrypted; rund-trio needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        looks_like_key = b"-----BEGIN" in data and b"PRIVATE KEY-----" in data
        reason = (
            "is a damaged or unsupported PEM private key"
            if looks_like_key
            else ("is not a PEM private key")
        )
        raise ConfigError(f"{_describe(label, path)} {reason}") from None


def _check_pair(
    cert_path: Path, key_path: Path, labels: TlsLabels
) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """Check that the key file belongs to the certificate file and that it is in date."""
    certificate = load_certificate(cert_path, labels.cert)
    key = load_private_key(key_path, labels.key)
    if key.public_key() != certificate.public_key():
        raise ConfigError(
            f"{_describe(labels.key, key_path)} does not match "
            f"{_describe(labels.cert, cert_path)} (they are not a key pair)"
        )
    _check_strength(key, _describe(labels.key, key_path))
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        expired = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        raise ConfigError(
            f"{_describe(labels.cert, cert_path)} expired on {expired} ({PKI_HINT} --force)"
        )
    return certificate, key


def _check_strength(key: PrivateKeyTypes, described: str) -> None:
    """ConfigError unless ``key`` offers the 192 bits of security level 4 asks for."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 384:
            return
        what = f"an ECDSA key on {key.curve.name}"
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size >= 7680:
            return
        what = f"a {key.key_size}-bit RSA key"
    elif isinstance(key, ed448.Ed448PrivateKey):
        return
    else:
        what = f"a {type(key).__name__.removesuffix('PrivateKey') or 'unknown'} key"
    raise ConfigError(
        f"{described} is {what}, too weak: rund-trio needs 192-bit security, "
        f"an ECDSA key on P-384 or P-521 ({PKI_HINT})"
    )


def _configure(
    context: ssl.SSLContext, ca: Path, cert: Path, key: Path, labels: TlsLabels
) -> ssl.SSLContext:
    """Apply the settings both sides share and load the files, checked first."""
    from cryptography.hazmat.primitives import serialization

    _set_protocol(context)
    ca_certificates = load_ca_certificates(ca, labels.ca)
    _check_pair(cert, key, labels)
    cadata = "".join(
        c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in ca_certificates
    )
    try:
        context.load_verify_locations(cadata=cadata)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        raise ConfigError(f"{_describe(labels.ca, ca)} cannot be used as a CA: {reason}") from None
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError:
        # The file vanished between our check and OpenSSL's read.
        raise ConfigError(
            f"cannot read {_describe(labels.cert, cert)} or {_describe(labels.key, key)}: "
            "No such file or directory"
        ) from None
    except (ssl.SSLError, OSError) as error:
        reason = (error.reason if isinstance(error, ssl.SSLError) else None) or str(error)
        raise ConfigError(
            f"cannot use {_describe(labels.cert, cert)} with {_describe(labels.key, key)}: {reason}"
        ) from None
    return context


def _set_protocol(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_ciphers(_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))


def server_ssl_context(
    ca: StrPath, cert: StrPath, key: StrPath, *, labels: TlsLabels = DEFAULT_LABELS
) -> ssl.SSLContext:
    """The daemon's context: TLS 1.3 only, ALPN h2, client certificates required.

    Client certificates must chain to the certificates in ``ca``; the server
    presents ``cert`` with ``key``. Raises ConfigError (one line naming the
    flag from ``labels``, the file and the reason) if any file is missing,
    unreadable, a directory, not PEM, encrypted, expired, or if ``key`` does
    not belong to ``cert``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    return _configure(context, Path(ca), Path(cert), Path(key), labels)


def client_ssl_context(
    ca: StrPath, cert: StrPath, key: StrPath, *, labels: TlsLabels = DEFAULT_LABELS
) -> ssl.SSLContext:
    """A client's context: TLS 1.3 only, ALPN h2, server verified against ``ca``.

    The server's certificate must chain to ``ca`` (the system trust store is
    not used) and match the host name the connection is made to
    (``check_hostname`` is on). The client presents ``cert`` with ``key``.
    Raises ConfigError exactly as :func:`server_ssl_context` does, except that
    an expired client certificate is left for the daemon to refuse: when
    :mod:`ssl` loads the files without complaint, they are not examined
    further, which keeps ``cryptography`` out of the client's start-up.
    """

    def new_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = True
        return context

    context = new_context()
    _set_protocol(context)
    try:
        context.load_verify_locations(cafile=os.fspath(ca))
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError, ValueError):
        # Something is wrong with the files: find out what, precisely.
        return _configure(new_context(), Path(ca), Path(cert), Path(key), labels)
    return context

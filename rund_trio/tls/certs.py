"""A development PKI: one CA, one server certificate, any number of client certificates.

Everything is ECDSA and SHA-512. The CA and client keys are on P-521; the
server key is on P-521 by default or P-384 on request (grpcio, through
BoringSSL, cannot complete a handshake with a P-521 server key).

Files written into the output directory (created 0700 if missing):

* ``ca.pem`` / ``ca-key.pem`` -- the certificate authority
* ``server.pem`` / ``server-key.pem`` -- the daemon's certificate
* ``NAME.pem`` / ``NAME-key.pem`` -- one pair per client

Private keys are created with mode 0600 (they are never readable by anyone
else, not even for an instant); certificates with mode 0644. Files are never
overwritten unless asked to, so running the generator again with a new client
adds that client, signed by the CA already there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rund_trio.errors import ConfigError
from rund_trio.tls.context import load_certificate, load_private_key
from rund_trio.tls.identity import parse_san as canonical_san

__all__ = [
    "DEFAULT_SERVER_NAMES",
    "CertKeyPaths",
    "CertificateAuthority",
    "ClientSpec",
    "IssuedCert",
    "PkiFiles",
    "ServerCurve",
    "check_client_name",
    "generate_pki",
    "issue_client",
    "parse_san",
]

ServerCurve = Literal["P-521", "P-384"]

DEFAULT_SERVER_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_NAME = "ca"
SERVER_NAME = "server"

_CURVES: Mapping[str, type[ec.EllipticCurve]] = {"P-521": ec.SECP521R1, "P-384": ec.SECP384R1}
_RESERVED = frozenset({CA_NAME, SERVER_NAME})
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIR_MODE = 0o700


@dataclass(frozen=True)
class ClientSpec:
    """One client certificate to issue.

    ``name`` becomes the CN and the file names (``NAME.pem``, ``NAME-key.pem``).
    Unless ``no_san`` is set the certificate carries the SAN ``DNS:NAME`` (or
    ``email:NAME`` when the name contains ``@``) followed by ``extra_sans``,
    each written ``DNS:x``, ``IP:x``, ``email:x`` or ``URI:x``. With
    ``no_san`` the certificate has no subjectAltName extension at all (an
    anonymous client, useful in tests); ``extra_sans`` must then be empty.
    """

    name: str
    extra_sans: tuple[str, ...] = ()
    no_san: bool = False


@dataclass(frozen=True)
class CertKeyPaths:
    """Where a certificate and its private key live."""

    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path, name: str) -> CertKeyPaths:
        """The paths ``directory/NAME.pem`` and ``directory/NAME-key.pem``."""
        return cls(directory / f"{name}.pem", directory / f"{name}-key.pem")


@dataclass(frozen=True)
class PkiFiles:
    """What :func:`generate_pki` left in the output directory.

    ``written`` lists the files created (or replaced) by this call, in the
    order they were written; ``skipped`` the files that already existed and
    were kept.
    """

    out_dir: Path
    ca: CertKeyPaths
    server: CertKeyPaths
    clients: Mapping[str, CertKeyPaths]
    written: tuple[Path, ...] = ()
    skipped: tuple[Path, ...] = ()
    ca_reused: bool = False


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, in memory."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        """The certificate, PEM-encoded."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, PEM-encoded PKCS#8 without encryption."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def parse_san(text: str) -> x509.GeneralName:
    """The certificate SAN for ``DNS:x``, ``IP:x``, ``email:x`` or ``URI:x`` (kind in
    any case), read as :func:`rund_trio.tls.identity.parse_san` reads a peer's, so a
    certificate made here names exactly the identity the daemon will see.

    Raises ConfigError with a one-line reason for anything else, including a
    non-ASCII value or an ``IP:`` value that is not an IPv4 or IPv6 address.
    """
    if not text.isascii():
        raise ConfigError(f"SAN {text!r} must be ASCII")
    try:
        kind, _, value = canonical_san(text).partition(":")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    return _GENERAL_NAMES[kind](value)


_GENERAL_NAMES: dict[str, Callable[[str], x509.GeneralName]] = {
    "DNS": x509.DNSName,
    "email": x509.RFC822Name,
    "URI": x509.UniformResourceIdentifier,
}


def _server_san(name: str) -> x509.GeneralName:
    """A server name as a SAN: an IPAddress if it parses as one, else a DNSName."""
    name = name.strip()
    if not name:
        raise ConfigError("a server name must not be empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name.isascii() or any(c.isspace() or c in "/:@" for c in name):
        raise ConfigError(f"server name {name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def _client_sans(spec: ClientSpec) -> list[x509.GeneralName]:
    if spec.no_san:
        if spec.extra_sans:
            raise ConfigError(f"client {spec.name!r} cannot have both no SAN and extra SANs")
        return []
    default: x509.GeneralName = (
        x509.RFC822Name(spec.name) if "@" in spec.name else x509.DNSName(spec.name)
    )
    sans = [default]
    for text in spec.extra_sans:
        san = parse_san(text)
        if san not in sans:
            sans.append(san)
    return sans


def check_client_name(name: str) -> None:
    """Raise ConfigError unless ``name`` can name a client certificate and its files.

    A name is 1-64 characters of letters, digits and ``. _ @ + -``, starts
    with a letter or digit, is not ``ca`` or ``server`` and does not end in
    ``-key`` (so that its files never collide with another pair's).
    """
    if not _CLIENT_NAME.fullmatch(name):
        raise ConfigError(
            f"client name {name!r} must be 1-64 letters, digits or . _ @ + -, "
            "starting with a letter or digit"
        )
    if name in _RESERVED or name.endswith("-key"):
        raise ConfigError(f"client name {name!r} is reserved (its files would collide)")


def _new_key(curve: str = "P-521") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVES[curve]())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rund-trio development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key, able to issue leaf certificates.

    Every certificate it issues is signed with ECDSA/SHA-512, is not a CA, has
    a critical KeyUsage of digitalSignature only, subject and authority key
    identifiers, and expires no later than the CA itself.
    """

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(
        cls, *, valid_days: int = 365, common_name: str = "rund-trio development CA"
    ) -> CertificateAuthority:
        """Create a new self-signed CA on P-521, valid ``valid_days`` days from now.

        Its BasicConstraints (CA, path length 0) and KeyUsage (keyCertSign,
        cRLSign) are critical and it carries a SubjectKeyIdentifier.
        """
        _check_days(valid_days)
        key = _new_key("P-521")
        now = datetime.datetime.now(datetime.UTC)
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA512())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """Load a CA from PEM files.

        Raises ConfigError (naming the file) if a file cannot be read or
        parsed, the key is not an EC key, the certificate is not a CA, or the
        key does not belong to the certificate.
        """
        certificate = load_certificate(cert_path)
        key = load_private_key(key_path)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an ECDSA private key")
        if key.public_key() != certificate.public_key():
            raise ConfigError(f"{key_path} does not match {cert_path}")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise ConfigError(f"{cert_path} is not a CA certificate")
        return cls(certificate, key)

    def _leaf(
        self,
        common_name: str,
        key: ec.EllipticCurvePrivateKey,
        sans: Sequence[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        valid_days: int,
    ) -> IssuedCert:
        _check_days(valid_days)
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(
            now + datetime.timedelta(days=valid_days), self.certificate.not_valid_after_utc
        )
        ca_public = self.certificate.public_key()
        assert isinstance(ca_public, ec.EllipticCurvePublicKey)
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(aki, critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return IssuedCert(builder.sign(self.private_key, hashes.SHA512()), key)

    def issue_server(
        self,
        server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
        *,
        curve: ServerCurve = "P-521",
        valid_days: int = 365,
    ) -> IssuedCert:
        """Issue a server certificate (EKU serverAuth) on ``curve``.

        Each server name becomes an IP SAN if :mod:`ipaddress` parses it, else
        a DNS SAN; the CN is the first name. Raises ConfigError if there is no
        name or a name is neither.
        """
        if curve not in _CURVES:
            raise ConfigError(f"server curve {curve!r} must be one of {', '.join(_CURVES)}")
        if not server_names:
            raise ConfigError("the server certificate needs at least one server name")
        sans: list[x509.GeneralName] = []
        for name in server_names:
            san = _server_san(name)
            if san not in sans:
                sans.append(san)
        return self._leaf(
            server_names[0].strip(),
            _new_key(curve),
            sans,
            ExtendedKeyUsageOID.SERVER_AUTH,
            valid_days,
        )

    def issue_client(self, spec: ClientSpec, *, valid_days: int = 365) -> IssuedCert:
        """Issue a client certificate (P-521, EKU clientAuth, CN=name) for ``spec``.

        Raises ConfigError for an invalid name or SAN (see :class:`ClientSpec`).
        """
        check_client_name(spec.name)
        return self._leaf(
            spec.name,
            _new_key("P-521"),
            _client_sans(spec),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            valid_days,
        )

    def issued(self, certificate: x509.Certificate) -> bool:
        """True if ``certificate`` was signed by this CA."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def as_issued(self) -> IssuedCert:
        """The CA certificate and key as an :class:`IssuedCert` (to write them)."""
        return IssuedCert(self.certificate, self.private_key)


def _check_days(valid_days: int) -> None:
    if valid_days < 1:
        raise ConfigError(f"validity must be at least 1 day, not {valid_days}")


def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to ``path``, created with ``mode`` from the first instant.

    The file is opened with O_EXCL and ``mode`` (narrowed by the umask); a
    certificate (any mode other than 0600) is then set to exactly ``mode`` with
    fchmod before any byte is written, so it is readable despite a strict
    umask. Without ``replace`` the file must not exist yet. With ``replace``
    the data goes to a fresh temporary file in the same directory that is then
    renamed over ``path``, so the old file is never truncated in place.
    """
    target = path
    if replace:
        path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; use --force to replace it") from None
    except OSError as error:
        raise ConfigError(f"cannot create {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            if mode != _KEY_MODE:
                os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(path, target)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {error.strerror or error}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_pair(paths: CertKeyPaths, issued: IssuedCert, *, replace: bool) -> list[Path]:
    """Write the key (0600) then the certificate (0644); return both paths."""
    _write(paths.key, issued.key_pem(), _KEY_MODE, replace=replace)
    _write(paths.cert, issued.cert_pem(), _CERT_MODE, replace=replace)
    return [paths.key, paths.cert]


def _pair_state(paths: CertKeyPaths) -> Literal["absent", "present"]:
    """Whether both files of a pair exist; ConfigError if only one does."""
    cert, key = paths.cert.exists(), paths.key.exists()
    if cert and key:
        return "present"
    if not cert and not key:
        return "absent"
    have, missing = (paths.cert, paths.key) if cert else (paths.key, paths.cert)
    raise ConfigError(
        f"{have} exists but {missing} does not; remove {have} or use --force to regenerate"
    )


def _ensure_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {out_dir}: {error.strerror or error}") from None


def _check_existing_pair(
    ca: CertificateAuthority, ca_paths: CertKeyPaths, paths: CertKeyPaths
) -> None:
    """ConfigError unless the kept pair was issued by ``ca`` and its key matches."""
    certificate = load_certificate(paths.cert)
    if not ca.issued(certificate):
        raise ConfigError(
            f"{paths.cert} was not issued by {ca_paths.cert}; "
            "remove it or use --force to regenerate"
        )
    if load_private_key(paths.key).public_key() != certificate.public_key():
        raise ConfigError(
            f"{paths.key} does not match {paths.cert}; remove both or use --force to regenerate"
        )


def _load_or_create_ca(
    paths: CertKeyPaths, *, valid_days: int, overwrite: bool
) -> tuple[CertificateAuthority, bool]:
    """Return the CA of ``paths`` and whether it already existed."""
    if not overwrite and _pair_state(paths) == "present":
        return CertificateAuthority.load(paths.cert, paths.key), True
    return CertificateAuthority.create(valid_days=valid_days), False


def _issue_into(
    ca: CertificateAuthority,
    ca_paths: CertKeyPaths,
    paths: CertKeyPaths,
    issue: Callable[[], IssuedCert],
    *,
    overwrite: bool,
    written: list[Path],
    skipped: list[Path],
) -> None:
    """Write the pair ``issue()`` makes, or keep the existing one if allowed.

    ``issue`` is only called when the pair is actually written.
    """
    if not overwrite and _pair_state(paths) == "present":
        _check_existing_pair(ca, ca_paths, paths)
        skipped.extend([paths.key, paths.cert])
        return
    written.extend(_write_pair(paths, issue(), replace=overwrite))


def generate_pki(
    out_dir: Path,
    *,
    clients: Sequence[ClientSpec] = (ClientSpec("client"),),
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    server_curve: ServerCurve = "P-521",
    valid_days: int = 365,
    overwrite: bool = False,
) -> PkiFiles:
    """Create (or complete) a development PKI in ``out_dir``.

    Guarantees on return:

    * ``out_dir`` exists (created with mode 0700 if it was missing);
    * ``ca.pem``/``ca-key.pem``, ``server.pem``/``server-key.pem`` and one
      ``NAME.pem``/``NAME-key.pem`` per client exist, and every leaf
      certificate there was issued by that CA;
    * every key written has mode 0600 from its creation, every certificate
      written mode 0644.

    Without ``overwrite`` an existing CA is reused and existing pairs are
    kept (listed in ``skipped``); a kept leaf not issued by the CA, a kept key
    not matching its certificate, or a pair with only one of its two files,
    raises ConfigError rather than leave an inconsistent PKI. With
    ``overwrite`` everything is regenerated, each file replaced atomically.
    Invalid names, SANs, curves or validity raise ConfigError before any file
    is written.
    """
    names = [spec.name for spec in clients]
    for spec in clients:
        check_client_name(spec.name)
        _client_sans(spec)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"client {duplicates[0]!r} is given more than once")
    if server_curve not in _CURVES:
        raise ConfigError(f"server curve {server_curve!r} must be one of {', '.join(_CURVES)}")
    if not server_names:
        raise ConfigError("the server certificate needs at least one server name")
    for name in server_names:
        _server_san(name)
    _check_days(valid_days)

    _ensure_dir(out_dir)
    ca_paths = CertKeyPaths.in_dir(out_dir, CA_NAME)
    server_paths = CertKeyPaths.in_dir(out_dir, SERVER_NAME)
    client_paths = {spec.name: CertKeyPaths.in_dir(out_dir, spec.name) for spec in clients}

    ca, reused = _load_or_create_ca(ca_paths, valid_days=valid_days, overwrite=overwrite)
    written: list[Path] = []
    skipped: list[Path] = []
    if reused:
        skipped.extend([ca_paths.key, ca_paths.cert])
    else:
        # A fresh CA: any leaf still around was signed by a CA that is gone.
        if not overwrite:
            for paths in (server_paths, *client_paths.values()):
                if _pair_state(paths) == "present":
                    raise ConfigError(
                        f"{paths.cert} exists but {ca_paths.cert} does not; "
                        "use --force to regenerate everything"
                    )
        written.extend(_write_pair(ca_paths, ca.as_issued(), replace=overwrite))

    _issue_into(
        ca,
        ca_paths,
        server_paths,
        partial(ca.issue_server, server_names, curve=server_curve, valid_days=valid_days),
        overwrite=overwrite,
        written=written,
        skipped=skipped,
    )
    for spec in clients:
        _issue_into(
            ca,
            ca_paths,
            client_paths[spec.name],
            partial(ca.issue_client, spec, valid_days=valid_days),
            overwrite=overwrite,
            written=written,
            skipped=skipped,
        )
    return PkiFiles(
        out_dir=out_dir,
        ca=ca_paths,
        server=server_paths,
        clients=client_paths,
        written=tuple(written),
        skipped=tuple(skipped),
        ca_reused=reused,
    )


def issue_client(
    ca: CertKeyPaths,
    spec: ClientSpec,
    out_dir: Path,
    *,
    valid_days: int = 365,
    overwrite: bool = False,
) -> CertKeyPaths:
    """Issue a client certificate from an existing CA into ``out_dir``.

    Writes ``out_dir/NAME.pem`` (0644) and ``out_dir/NAME-key.pem`` (0600),
    creating ``out_dir`` with mode 0700 if missing. Raises ConfigError if the
    CA cannot be loaded, the spec is invalid, or (without ``overwrite``)
    either file already exists.
    """
    authority = CertificateAuthority.load(ca.cert, ca.key)
    issued = authority.issue_client(spec, valid_days=valid_days)
    _ensure_dir(out_dir)
    paths = CertKeyPaths.in_dir(out_dir, spec.name)
    if not overwrite:
        for path in (paths.cert, paths.key):
            if path.exists():
                raise ConfigError(f"{path} already exists; use --force to replace it")
    _write_pair(paths, issued, replace=overwrite)
    return paths

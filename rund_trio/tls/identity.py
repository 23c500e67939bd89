"""Who is on the other end of a TLS connection: the SANs of the peer's certificate.

An :class:`Identity` is the set of subjectAltNames of a verified certificate,
each normalized to one spelling so that two certificates naming the same
thing compare equal:

* ``DNS:name``  -- lower-cased, a trailing dot removed
* ``IP:addr``   -- the canonical :mod:`ipaddress` form (``::1`` and
  ``0:0:0:0:0:0:0:1`` are both ``IP:::1``)
* ``email:local@domain`` -- the domain lower-cased, the local part kept as is
* ``URI:uri``   -- kept as is

SAN kinds other than these (directory names, other names, registered ids)
are ignored: they never make two identities share.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "Identity",
    "identity_from_certificate",
    "identity_from_der",
    "identity_from_peer_certificate",
    "normalize_san",
    "parse_san",
]

# Spellings of SAN kinds, as written by people ("DNS:x"), by ssl.getpeercert()
# ("IP Address") and by OpenSSL's text output, mapped to the canonical prefix.
_KINDS: Mapping[str, str] = {
    "dns": "DNS",
    "ip": "IP",
    "ip address": "IP",
    "email": "email",
    "uri": "URI",
}

_STR_LIMIT = 3


def normalize_san(kind: str, value: str) -> str | None:
    """Return the canonical ``KIND:value`` spelling of one SAN, or None.

    ``kind`` is matched case-insensitively against ``DNS``, ``IP`` (or
    ``IP Address``, as :meth:`ssl.SSLSocket.getpeercert` spells it), ``email``
    and ``URI``. Returns None for any other kind and for an empty value.
    Raises ValueError if an ``IP`` value is not an IP address.
    """
    canonical = _KINDS.get(kind.strip().lower())
    value = value.strip()
    if canonical is None or not value:
        return None
    if canonical == "DNS":
        name = value.lower().rstrip(".")
        return f"DNS:{name}" if name else None
    if canonical == "IP":
        return f"IP:{ipaddress.ip_address(value).compressed}"
    if canonical == "email":
        local, at, domain = value.rpartition("@")
        return f"email:{local}@{domain.lower()}" if at else f"email:{value}"
    return f"URI:{value}"


def parse_san(text: str) -> str:
    """Parse a SAN written as ``KIND:value`` and return its canonical spelling.

    ``KIND`` is one of ``DNS``, ``IP``, ``email``, ``URI`` (any case).
    Raises ValueError with a one-line reason for anything else.
    """
    kind, colon, value = text.partition(":")
    if not colon or kind.strip().lower() not in _KINDS:
        raise ValueError(
            f"SAN {text!r} must look like DNS:name, IP:address, email:address or URI:uri"
        )
    try:
        san = normalize_san(kind, value)
    except ValueError:
        raise ValueError(f"SAN {text!r}: {value.strip()!r} is not an IP address") from None
    if san is None:
        raise ValueError(f"SAN {text!r} has an empty value")
    return san


@dataclass(frozen=True)
class Identity:
    """The normalized SANs (and, for logs only, the CN) of a peer certificate.

    Two identities are the same principal for authorization purposes when they
    share at least one SAN (:meth:`shares_san_with`); the common name is never
    used for that.
    """

    sans: frozenset[str] = frozenset()
    common_name: str | None = None

    @classmethod
    def of(cls, *sans: str, common_name: str | None = None) -> Identity:
        """Build an identity from SANs written as ``KIND:value`` (see :func:`parse_san`).

        Raises ValueError on a malformed SAN.
        """
        return cls(frozenset(parse_san(san) for san in sans), common_name)

    @property
    def is_anonymous(self) -> bool:
        """True when the certificate carried no usable SAN."""
        return not self.sans

    def shares_san_with(self, other: Identity) -> bool:
        """True when both identities have at least one SAN in common.

        An anonymous identity never shares with anyone, not even with another
        anonymous identity.
        """
        return not self.sans.isdisjoint(other.sans)

    def __str__(self) -> str:
        if self.is_anonymous:
            return f"anonymous(CN={self.common_name})" if self.common_name else "anonymous"
        ordered = sorted(self.sans)
        text = ",".join(ordered[:_STR_LIMIT])
        if len(ordered) > _STR_LIMIT:
            text += f",+{len(ordered) - _STR_LIMIT} more"
        return text


def _common_name_from_dict(cert: Mapping[str, Any]) -> str | None:
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if len(attribute) == 2 and attribute[0] == "commonName":
                return str(attribute[1])
    return None


def identity_from_peer_certificate(cert: Mapping[str, Any] | None) -> Identity:
    """Build the identity of a peer from :meth:`ssl.SSLSocket.getpeercert` output.

    ``cert`` is the dict form (as anyio's ``TLSAttribute.peer_certificate``
    gives it), whose ``subjectAltName`` is a tuple of ``(kind, value)`` pairs
    such as ``('DNS', 'localhost')`` or ``('IP Address', '127.0.0.1')``.
    None or an empty dict (no verified certificate) gives the anonymous
    identity. Unsupported SAN kinds and unparsable IP values are skipped,
    never raised.
    """
    if not cert:
        return Identity()
    sans: set[str] = set()
    for entry in cert.get("subjectAltName", ()):
        if len(entry) != 2:
            continue
        kind, value = entry
        if not isinstance(kind, str) or not isinstance(value, str):
            continue
        try:
            san = normalize_san(kind, value)
        except ValueError:
            continue
        if san is not None:
            sans.add(san)
    return Identity(frozenset(sans), _common_name_from_dict(cert))


def _sans_of(certificate: x509.Certificate) -> Iterable[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return
    names = extension.value
    for dns in names.get_values_for_type(x509.DNSName):
        if (san := normalize_san("DNS", dns)) is not None:
            yield san
    for address in names.get_values_for_type(x509.IPAddress):
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            yield f"IP:{address.compressed}"
    for email in names.get_values_for_type(x509.RFC822Name):
        if (san := normalize_san("email", email)) is not None:
            yield san
    for uri in names.get_values_for_type(x509.UniformResourceIdentifier):
        if (san := normalize_san("URI", uri)) is not None:
            yield san


def identity_from_certificate(certificate: x509.Certificate) -> Identity:
    """Build the identity of a parsed certificate (SANs as in :func:`normalize_san`)."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else None
    return Identity(frozenset(_sans_of(certificate)), common_name)


def identity_from_der(der: bytes) -> Identity:
    """Build the identity of a DER-encoded certificate.

    Raises ValueError if ``der`` is not a DER certificate.
    """
    return identity_from_certificate(x509.load_der_x509_certificate(der))

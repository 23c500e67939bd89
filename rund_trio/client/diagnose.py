"""Why the client could not talk to the daemon, in one line a person can act on.

``diagnose_connect`` and ``diagnose_lost`` map what the transport raised (a
socket error, an ssl error, the connection's end) to a ``Diagnosis``: which
side is wrong (``Side``) and a sentence saying what happened and what to do.
The CLI adds where the certificate files came from (``cli.tls_discovery``).

Kept apart from the transport so that any transport can call it: the one
thing it needs besides the error is whether the daemon had answered on the
connection before it ended (``answered``): a daemon that refuses a client's
certificate closes the connection before sending anything, a daemon that shuts
down closes one it has been answering on.
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from typing import NamedTuple

from rund_trio.errors import ConfigError, ConnectionFailed


class Side(enum.Enum):
    """Which side has to change something."""

    ADDRESS = "address"
    """--addr names no rund-trio daemon (a typo, another server, nothing there)."""
    DAEMON_CERT = "daemon certificate"
    """The daemon's certificate is not one this client's --ca vouches for."""
    CLIENT_CERT = "client certificate"
    """The daemon refused this client's certificate."""
    DAEMON = "daemon"
    """The daemon went away."""
    NETWORK = "network"
    OTHER = "other"


class Diagnosis(NamedTuple):
    side: Side
    message: str


class Diagnosed(ConnectionFailed):
    """A ``ConnectionFailed`` whose cause is known (``diagnosis``)."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.message)
        self.diagnosis = diagnosis


def check_dial_address(addr: str) -> None:
    """Refuse a URL or a bare host given as ``--addr`` (``ConfigError``)."""
    scheme, sep, rest = addr.partition("://")
    if sep:
        hostport = rest.split("/", 1)[0] or "localhost:8000"
        if ":" not in hostport.rsplit("]", 1)[-1]:
            hostport += ":8000"
        raise ConfigError(
            f"--addr {addr!r} is a URL; the daemon speaks gRPC over mutual TLS, not "
            f"{scheme}: give host:port, e.g. --addr {hostport}"
        )


_EAI_CODES = {
    code
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_AGAIN", "EAI_FAIL", "EAI_SERVICE")
    if (code := getattr(socket, name, None)) is not None
}

_CLIENT_CERT_ALERTS = (
    "unknown ca",
    "bad certificate",
    "certificate required",
    "certificate unknown",
    "certificate expired",
    "certificate revoked",
    "unsupported certificate",
    "access denied",
)

_CLIENT_CERT_FIX = (
    "use a client certificate made with the daemon's CA (on the daemon's host: "
    "`rund-trio certs --out <the daemon's tls directory> --client NAME` reuses its CA) "
    "and give it with --cert/--key"
)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error.strerror or error).lower().replace("_", " ")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _is_specific(error: BaseException) -> bool:
    """An OS or TLS error that says what happened (anyio's "All connection
    attempts failed" does not: its cause does)."""
    return isinstance(error, ssl.SSLError) or (isinstance(error, OSError) and bool(error.errno))


def _root(error: BaseException) -> BaseException:
    """The innermost transport error behind ``error`` (anyio and the gRPC layer wrap them)."""
    seen = {id(error)}
    while not _is_specific(error):
        if isinstance(error, BaseExceptionGroup) and error.exceptions:
            inner: BaseException | None = error.exceptions[0]
        else:
            inner = error.__cause__ or error.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    return error


def _client_cert_refused(addr: str, reason: str) -> Diagnosis:
    return Diagnosis(
        Side.CLIENT_CERT,
        f"the daemon at {addr} refused this client's certificate ({reason}): " + _CLIENT_CERT_FIX,
    )


def diagnose_connect(error: BaseException, addr: str, host: str) -> Diagnosis:
    """What went wrong while connecting to ``addr`` (resolving ``host``, TCP,
    the TLS handshake)."""
    root = _root(error)
    if isinstance(root, socket.gaierror) or (
        isinstance(root, OSError) and root.errno in _EAI_CODES
    ):
        return Diagnosis(
            Side.ADDRESS,
            f"cannot find host {host!r} (from --addr {addr}): the name does not resolve; "
            "check its spelling, or give the daemon's IP address",
        )
    if isinstance(root, ssl.SSLCertVerificationError):
        return _daemon_certificate(root, addr, host)
    if isinstance(root, ssl.SSLError):
        reason = _reason(root)
        if (
            "wrong version number" in reason
            or "http request" in reason
            or "packet length" in reason
        ):
            return Diagnosis(
                Side.ADDRESS,
                f"{addr} does not speak TLS (it answered like a plain-text server, e.g. HTTP): "
                "it is not a rund-trio daemon; check the host and port of --addr",
            )
        if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
            return _client_cert_refused(addr, reason)
        if "eof" in reason:
            return _closed_in_handshake(addr)
        return Diagnosis(
            Side.ADDRESS,
            f"the TLS handshake with {addr} failed ({reason}): is it a rund-trio daemon? "
            "check --addr",
        )
    if isinstance(root, ConnectionRefusedError):
        return Diagnosis(
            Side.ADDRESS,
            f"nothing listens on {addr} (connection refused): start the daemon "
            "(`rund-trio serve`) or check the port of --addr",
        )
    if isinstance(root, OSError) and root.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
    ):
        return Diagnosis(
            Side.NETWORK,
            f"cannot reach {addr} ({_reason(root)}): check the address and the network "
            "between here and the daemon",
        )
    if _closed(root):
        return _closed_in_handshake(addr)
    return Diagnosis(Side.OTHER, f"cannot connect to {addr}: {_reason(root)}")


def _closed(error: BaseException) -> bool:
    """The peer closed or reset the connection (anyio says EndOfStream)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ECONNRESET, errno.EPIPE)
    return not isinstance(error, ssl.SSLError)


def _closed_in_handshake(addr: str) -> Diagnosis:
    return Diagnosis(
        Side.ADDRESS,
        f"{addr} closed the connection during the TLS handshake: a rund-trio daemon does so "
        "only to clients without TLS 1.3; otherwise it is not a rund-trio daemon; check --addr",
    )


def _daemon_certificate(error: ssl.SSLCertVerificationError, addr: str, host: str) -> Diagnosis:
    code = error.verify_code
    reason = error.verify_message or _reason(error)
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return Diagnosis(
            Side.DAEMON_CERT,
            f"the daemon's certificate at {addr} has expired ({reason}): its operator must "
            "issue it a new one (`rund-trio certs` in its tls directory keeps the CA)",
        )
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return Diagnosis(
            Side.DAEMON_CERT,
            f"the daemon's certificate at {addr} is not valid for the name {host!r}: connect "
            "with a name it was issued for (`rund-trio certs --server-name`), e.g. localhost",
        )
    return Diagnosis(
        Side.DAEMON_CERT,
        f"the server at {addr} has a certificate that --ca does not vouch for ({reason}): "
        "give --ca the CA the daemon's certificates were made with (the ca.pem beside them), "
        "and check that --addr is the rund-trio daemon",
    )


def diagnose_not_grpc(addr: str) -> Diagnosis:
    """The TLS server at ``addr`` did not agree to speak HTTP/2 (ALPN ``h2``)."""
    return Diagnosis(
        Side.ADDRESS,
        f"{addr} speaks TLS but not gRPC (it did not offer HTTP/2): it is not a rund-trio "
        "daemon; check the host and port of --addr",
    )


def diagnose_lost(error: BaseException | None, addr: str, *, answered: bool) -> Diagnosis:
    """What ended an established connection to ``addr``: ``error`` is what the
    transport raised (None: the daemon closed it cleanly), ``answered`` whether
    the daemon had sent anything on it."""
    root = None if error is None else _root(error)
    reason = "" if root is None else _reason(root)
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        return _client_cert_refused(addr, reason)
    if not answered:
        return _client_cert_refused(addr, "it closed the connection before answering")
    # A reset or broken pipe says no more than a close: which one a shutdown
    # gives depends on what was in flight, so both read the same.
    plain_close = isinstance(root, OSError) and root.errno in (errno.ECONNRESET, errno.EPIPE)
    because = f" ({reason})" if reason and not plain_close else ""
    return Diagnosis(
        Side.DAEMON,
        f"the daemon at {addr} closed the connection{because}: it shut down or restarted; "
        "run the command again once it is back",
    )

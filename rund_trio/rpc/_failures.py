"""How a client connection fails, said once for every client driver (the
anyio ``Channel`` and the blocking ``BlockingChannel``): where it failed
(``Stage``), the facts behind it (``TransportFailed``), a short reason for an
I/O error (``describe_connection_error``) and which errors are I/O errors
(``io_errors``).

Imports no I/O library: a one-shot command on the blocking driver never
pays for anyio, asyncio or trio; their errors are recognised when they are
loaded.
"""

from __future__ import annotations

import enum
import os
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rund_trio.errors import ConnectionFailed

__all__ = [
    "REFUSED_AT_ONCE",
    "Stage",
    "TransportFailed",
    "describe_connection_error",
    "handshake_failed",
    "io_errors",
    "map_exceptions",
    "not_http2",
]

REFUSED_AT_ONCE = (
    "the daemon closed the connection (at once, it means the daemon refused this "
    "client's certificate: check --cert and --key against the daemon's --ca)"
)


class Stage(enum.Enum):
    """Where a connection failed."""

    CONNECT = "connect"
    """Reaching the peer: name resolution, TCP, the TLS handshake."""
    PROTOCOL = "protocol"
    """The TLS handshake succeeded but the peer did not agree to HTTP/2 (ALPN)."""
    CONNECTION = "connection"
    """The established connection ended (or broke) while calls were open or being made."""


class TransportFailed(ConnectionFailed):
    """A ``ConnectionFailed`` with the facts behind it, for a caller that
    explains them: where it failed (``stage``), the I/O or TLS error the
    transport raised (``cause``; None when the peer just closed), whether the
    peer had sent anything on the connection after the TLS handshake
    (``peer_answered``: its HTTP/2 settings at least), and the ALPN protocol
    it agreed to (``alpn``). The message is this layer's own short account."""

    def __init__(
        self,
        message: str,
        *,
        stage: Stage,
        cause: BaseException | None = None,
        peer_answered: bool = False,
        alpn: str | None = None,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.cause = cause
        self.peer_answered = peer_answered
        self.alpn = alpn


def handshake_failed(addr: str, error: BaseException) -> TransportFailed:
    """The TLS handshake with ``addr`` failed with ``error`` (an I/O error):
    the daemon's certificate not trusted, or the connection refused by it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"cannot connect to {addr}: {error.verify_message}"
    else:
        reason = (
            f"cannot connect to {addr}: {describe_connection_error(error)} "
            "(the daemon accepts TLS 1.3 clients with a certificate from its CA)"
        )
    return TransportFailed(reason, stage=Stage.CONNECT, cause=error)


def not_http2(addr: str, alpn: str | None) -> TransportFailed:
    """The TLS server at ``addr`` did not agree to HTTP/2: gRPC cannot be spoken."""
    return TransportFailed(
        f"cannot connect to {addr}: the server did not agree to HTTP/2 (ALPN: {alpn or 'none'})",
        stage=Stage.PROTOCOL,
        alpn=alpn,
    )


def io_errors() -> tuple[type[BaseException], ...]:
    """The I/O errors of the transports in use: ``OSError`` (``ssl.SSLError``
    included), and anyio's and trio's when they are loaded (neither is
    imported for it: a client that does not use one never pays for it)."""
    errors: tuple[type[BaseException], ...] = (OSError,)
    anyio = sys.modules.get("anyio")
    if anyio is not None:
        errors += (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        )
    trio = sys.modules.get("trio")
    if trio is not None:
        errors += (trio.BrokenResourceError, trio.ClosedResourceError)
    return errors


@contextmanager
def map_exceptions(what: str) -> Iterator[None]:
    """The one table from I/O errors to ``ConnectionFailed``: "``what``: reason"."""
    try:
        yield
    except io_errors() as error:
        raise TransportFailed(
            f"{what}: {describe_connection_error(error)}", stage=Stage.CONNECT, cause=error
        ) from error


def describe_connection_error(error: BaseException) -> str:
    """A short human reason for a connection error: the TLS alert, the OS
    error, or the error itself."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error).lower().replace("_", " ")
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)  # asyncio words it "Connect call failed (...)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    anyio = sys.modules.get("anyio")
    if anyio is not None and isinstance(error, anyio.EndOfStream):
        return "the daemon closed the connection"
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error:
        return describe_connection_error(cause)
    return str(error) or type(error).__name__

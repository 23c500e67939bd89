"""What the server layer tells the rest of the daemon about connections and
calls, for metrics and the audit trail.

The gRPC layer calls an :class:`Observer` at fixed points: once per accepted
connection, once when its TLS handshake ends (whatever the outcome), once
when it closes, and once per call when its status is known. Observers must
not block or raise: they run on the request's own task, between the status
being decided and it being sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from google.protobuf.message import Message

from rund_trio.tls.identity import Identity


class HandshakeOutcome(Enum):
    OK = "ok"
    REFUSED = "refused"
    """The TLS handshake failed: no or a bad client certificate, wrong protocol."""
    TIMED_OUT = "timed_out"
    SHED = "shed"
    """Closed before its handshake because too many were already in progress."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, as the server saw it."""

    method: str
    """The gRPC path, e.g. ``/rund.JobController/Start``."""
    peer: str
    """The client's address, ``host:port``."""
    identity: Identity
    """The verified client certificate's identity."""
    certificate_sha256: str
    """Hex SHA-256 of the client certificate (DER)."""
    request: Message | None
    """The first request message, decoded; None when none arrived or it was malformed."""
    code: str
    """The gRPC status code's name, e.g. ``OK``, ``NOT_FOUND``."""
    message: str
    """The status message sent with a non-OK code ("" for OK)."""
    started_at: float
    """Wall-clock time (``time.time()``) when the request's headers arrived."""
    duration: float
    """Seconds from the request's headers to its status."""


class Observer(Protocol):
    def connection_opened(self, peer: str) -> None: ...

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None: ...

    def connection_closed(self, peer: str) -> None: ...

    def call_finished(self, record: CallRecord) -> None: ...


class NullObserver:
    """Observes nothing: the default when neither metrics nor an audit log are on."""

    def connection_opened(self, peer: str) -> None:
        pass

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None:
        pass

    def connection_closed(self, peer: str) -> None:
        pass

    def call_finished(self, record: CallRecord) -> None:
        pass

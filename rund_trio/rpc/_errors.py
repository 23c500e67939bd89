"""The errors the protocol core raises: each carries the gRPC status that answers it."""

from __future__ import annotations

from rund_trio.errors import RundError
from rund_trio.rpc._status import Status, StatusCode

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(RundError):
    """The HTTP/2 or gRPC protocol was broken. ``status`` says how a call that
    met this error ends (as h11's ``error_status_hint``). After it, the
    connection that raised it is in its ERROR state: it only flushes what it
    has queued (a GOAWAY) and then ends."""

    def __init__(self, message: str, code: StatusCode = StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.status = Status(code, message)


class LocalProtocolError(ProtocolError):
    """This side tried something the protocol does not allow (a bug, or a use
    of the API out of order)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""

"""gRPC status codes and the status a call ends with."""

from __future__ import annotations

import enum
import urllib.parse

from rund_trio.rpc._value import Value

__all__ = ["MAX_MESSAGE_CHARS", "Status", "StatusCode", "bounded_message"]

MAX_MESSAGE_CHARS = 1000
"""Longest status message sent. Messages quote what the client sent (a
program name can be megabytes), and clients refuse headers beyond a few tens
of KiB (grpc-message is percent-encoded: up to 12 bytes per character)."""


def bounded_message(message: str) -> str:
    """``message``, or its start and end around an ellipsis if it is longer
    than ``MAX_MESSAGE_CHARS`` (its end usually says why)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = (MAX_MESSAGE_CHARS - 5) // 2
    return f"{message[:half]} … {message[-half:]}"


class StatusCode(enum.IntEnum):
    """gRPC's status codes, by their wire numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Status(Value):
    """How a call ended: its code and, for an error, a message for a person."""

    __slots__ = ("code", "message")

    code: StatusCode
    message: str

    def __init__(self, code: StatusCode, message: str = "") -> None:
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "message", message)

    @property
    def ok(self) -> bool:
        return self.code is StatusCode.OK

    def trailers(self) -> list[tuple[str, str]]:
        """The ``grpc-status`` and ``grpc-message`` headers (percent-encoded,
        as gRPC says; the message bounded, as it may quote what the client sent)."""
        headers = [("grpc-status", str(int(self.code)))]
        if self.message:
            headers.append(("grpc-message", _percent_encode(bounded_message(self.message))))
        return headers

    @classmethod
    def from_trailers(cls, headers: dict[str, str]) -> Status:
        """The status in received trailers; UNKNOWN when ``grpc-status`` is
        missing or not a code."""
        raw = headers.get("grpc-status")
        try:
            code = StatusCode(int(raw)) if raw is not None else None
        except ValueError:
            code = None
        message = urllib.parse.unquote(headers.get("grpc-message", ""))
        if code is None:
            return cls(
                StatusCode.UNKNOWN, message or f"the daemon sent no valid grpc-status ({raw!r})"
            )
        return cls(code, message)


def _percent_encode(text: str) -> str:
    """grpc-message's encoding: printable ASCII but ``%`` as it is, any other byte ``%XX``."""
    return "".join(
        chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}"
        for byte in text.encode("utf-8")
    )

"""What ``GrpcConnection.next_event`` returns: the package's own frozen events.

Server role: ``RequestReceived``, ``MessageReceived``, ``RequestEnded``,
``StreamReset``, ``StreamRejected``, ``RequestRefused``, ``ConnectionClosed``.
Client role: ``ResponseReceived``, ``MessageReceived``, ``ResponseEnded``,
``StreamReset``, ``ConnectionClosed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rund_trio.rpc._status import Status

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Event",
    "MessageReceived",
    "NeedData",
    "RequestEnded",
    "RequestReceived",
    "RequestRefused",
    "ResponseEnded",
    "ResponseReceived",
    "StreamRejected",
    "StreamReset",
]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A call's request headers arrived (server role)."""

    stream_id: int
    service: str
    method: str
    timeout: float | None
    """Seconds the client gave the call (grpc-timeout); None when it set none.
    Zero or less than a microsecond is a deadline already past, not "no deadline"."""
    metadata: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    # purerpc's handlers that take a ``request`` argument read these names.
    @property
    def service_name(self) -> str:
        return self.service

    @property
    def method_name(self) -> str:
        return self.method


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response headers of a call arrived (client role)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One whole gRPC message (its bytes, without the 5-byte prefix).

    ``flow_controlled_length`` is the receive-window credit to give back with
    ``GrpcConnection.acknowledge`` once the message was consumed."""

    stream_id: int
    data: bytes
    flow_controlled_length: int


@dataclass(frozen=True, slots=True)
class RequestEnded:
    """The client sent all of its request (server role)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ResponseEnded:
    """The call ended with ``status`` (client role): trailers arrived, or the
    server reset the stream (then ``status`` says so)."""

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset the stream (RST_STREAM): it no longer wants it."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StreamRejected:
    """A request cannot be read any further (its message is too large,
    truncated, compressed...): its handler must answer with ``status``. The
    rest of what the client sends on it is dropped."""

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A request was refused from its headers alone and already answered with
    ``status``; no handler sees it. ``path`` is the ``:path`` it named."""

    stream_id: int
    path: str
    status: Status


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over: the peer sent GOAWAY, broke the protocol (then
    ``error`` says how, and a GOAWAY is queued), or the stream ended."""

    reason: str
    error: bool = False


class NeedData:
    """``next_event`` needs more bytes (``receive_data``) before the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

Event = (
    RequestReceived
    | ResponseReceived
    | MessageReceived
    | RequestEnded
    | ResponseEnded
    | StreamReset
    | StreamRejected
    | RequestRefused
    | ConnectionClosed
)

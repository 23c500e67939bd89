"""What ``GrpcConnection.next_event`` returns: the package's own frozen events.

Server role: ``RequestReceived``, ``MessageReceived``, ``RequestEnded``,
``StreamReset``, ``StreamRejected``, ``RequestRefused``, ``ConnectionClosed``.
Client role: ``ResponseReceived``, ``MessageReceived``, ``ResponseEnded``,
``StreamReset``, ``ConnectionClosed``.
"""

from __future__ import annotations

from rund_trio.rpc._status import Status
from rund_trio.rpc._value import Value

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


class RequestReceived(Value):
    """A call's request headers arrived (server role)."""

    __slots__ = ("stream_id", "service", "method", "timeout", "metadata")  # noqa: RUF023 (the field order)

    stream_id: int
    service: str
    method: str
    timeout: float | None
    """Seconds the client gave the call (grpc-timeout); None when it set none.
    Zero or less than a microsecond is a deadline already past, not "no deadline"."""
    metadata: tuple[tuple[str, str], ...]

    def __init__(
        self,
        stream_id: int,
        service: str,
        method: str,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "service", service)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "timeout", timeout)
        object.__setattr__(self, "metadata", metadata)

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


class ResponseReceived(Value):
    """The response headers of a call arrived (client role)."""

    __slots__ = ("stream_id",)

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        object.__setattr__(self, "stream_id", stream_id)


class MessageReceived(Value):
    """One whole gRPC message (its bytes, without the 5-byte prefix).

    ``flow_controlled_length`` is the receive-window credit to give back with
    ``GrpcConnection.acknowledge`` once the message was consumed."""

    __slots__ = ("stream_id", "data", "flow_controlled_length")  # noqa: RUF023 (the field order)

    stream_id: int
    data: bytes
    flow_controlled_length: int

    def __init__(self, stream_id: int, data: bytes, flow_controlled_length: int) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "flow_controlled_length", flow_controlled_length)


class RequestEnded(Value):
    """The client sent all of its request (server role)."""

    __slots__ = ("stream_id",)

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        object.__setattr__(self, "stream_id", stream_id)


class ResponseEnded(Value):
    """The call ended with ``status`` (client role): trailers arrived, or the
    server reset the stream (then ``status`` says so)."""

    __slots__ = ("stream_id", "status")  # noqa: RUF023 (the field order)

    stream_id: int
    status: Status

    def __init__(self, stream_id: int, status: Status) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "status", status)


class StreamReset(Value):
    """The peer reset the stream (RST_STREAM): it no longer wants it."""

    __slots__ = ("stream_id", "error_code")  # noqa: RUF023 (the field order)

    stream_id: int
    error_code: int

    def __init__(self, stream_id: int, error_code: int) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "error_code", error_code)


class StreamRejected(Value):
    """A request cannot be read any further (its message is too large,
    truncated, compressed...): its handler must answer with ``status``. The
    rest of what the client sends on it is dropped."""

    __slots__ = ("stream_id", "status")  # noqa: RUF023 (the field order)

    stream_id: int
    status: Status

    def __init__(self, stream_id: int, status: Status) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "status", status)


class RequestRefused(Value):
    """A request was refused from its headers alone and already answered with
    ``status``; no handler sees it. ``path`` is the ``:path`` it named."""

    __slots__ = ("stream_id", "path", "status")  # noqa: RUF023 (the field order)

    stream_id: int
    path: str
    status: Status

    def __init__(self, stream_id: int, path: str, status: Status) -> None:
        object.__setattr__(self, "stream_id", stream_id)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "status", status)


class ConnectionClosed(Value):
    """The connection is over: the peer sent GOAWAY, broke the protocol (then
    ``error`` says how, and a GOAWAY is queued), or the stream ended."""

    __slots__ = ("reason", "error")  # noqa: RUF023 (the field order)

    reason: str
    error: bool

    def __init__(self, reason: str, error: bool = False) -> None:
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "error", error)


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

"""gRPC over HTTP/2: every line of rund-trio that speaks it, fenced in here.

* a sans-I/O protocol core (``GrpcConnection``: bytes and events in, bytes
  and events out) on h2's public API;
* the server on trio (``GrpcServer``: ``serve_on`` any listener,
  ``serve_connection`` any byte stream);
* the client on anyio (``Channel``), so that the CLI runs on asyncio and
  starts fast, while tests drive it under trio over memory streams;
* a blocking client for unary calls (``BlockingChannel``), for a command
  that makes one call and exits: no event loop to import or start.

purerpc stays for what it is good at: service definitions and generated
stubs; this package re-exports ``Service``, ``Servicer``, ``RPCSignature``
and ``Cardinality`` for services written by hand. No module outside this
package and the generated ``rund_trio.api`` imports purerpc, h2 or
hyperframe (tests/test_fence.py).
"""

from typing import TYPE_CHECKING, Any

from rund_trio.rpc._blocking import BlockingChannel, open_blocking_channel, run_without_loop
from rund_trio.rpc._core import MAX_FRAME_SIZE, GrpcConnection, Role, parse_timeout
from rund_trio.rpc._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from rund_trio.rpc._events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageReceived,
    NeedData,
    RequestEnded,
    RequestReceived,
    RequestRefused,
    ResponseEnded,
    ResponseReceived,
    StreamRejected,
    StreamReset,
)
from rund_trio.rpc._failures import (
    Stage,
    TransportFailed,
    describe_connection_error,
    map_exceptions,
)
from rund_trio.rpc._state import CallEvent, StreamState, transition
from rund_trio.rpc._status import MAX_MESSAGE_CHARS, Status, StatusCode, bounded_message

if TYPE_CHECKING:
    from rund_trio.rpc._client import Call, Channel, open_channel, open_stream_channel
    from rund_trio.rpc._server import (
        MAX_REQUEST_SIZE_LIMIT,
        Cardinality,
        GrpcServer,
        NonBlockingUnary,
        PeerContext,
        RPCSignature,
        Service,
        Servicer,
        TransportConfig,
        current_identity,
        current_peer,
        nonblocking_unary,
    )
    from rund_trio.rpc._tls import ClientTls

_SERVER_NAMES = frozenset(
    {
        "MAX_REQUEST_SIZE_LIMIT",
        "Cardinality",
        "RPCSignature",
        "Service",
        "Servicer",
        "GrpcServer",
        "NonBlockingUnary",
        "PeerContext",
        "TransportConfig",
        "current_identity",
        "bounded_message",
        "current_peer",
        "nonblocking_unary",
    }
)


_ANYIO_CLIENT_NAMES = frozenset(
    {"Call", "Channel", "ClientTls", "open_channel", "open_stream_channel"}
)


def __getattr__(name: str) -> Any:
    # The server side (and purerpc's service definitions) import trio and
    # purerpc, the client on anyio imports anyio: a one-shot client (the CLI's
    # unary commands, on ``BlockingChannel``) pays for none of them.
    if name in _SERVER_NAMES:
        from rund_trio.rpc import _server

        return getattr(_server, name)
    if name in _ANYIO_CLIENT_NAMES:
        from rund_trio.rpc import _client, _tls

        return getattr(_tls if name == "ClientTls" else _client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_CHARS",
    "MAX_REQUEST_SIZE_LIMIT",
    "NEED_DATA",
    "BlockingChannel",
    "Call",
    "CallEvent",
    "Cardinality",
    "Channel",
    "ClientTls",
    "ConnectionClosed",
    "Event",
    "GrpcConnection",
    "GrpcServer",
    "LocalProtocolError",
    "MessageReceived",
    "NeedData",
    "NonBlockingUnary",
    "PeerContext",
    "ProtocolError",
    "RPCSignature",
    "RemoteProtocolError",
    "RequestEnded",
    "RequestReceived",
    "RequestRefused",
    "ResponseEnded",
    "ResponseReceived",
    "Role",
    "Service",
    "Servicer",
    "Stage",
    "Status",
    "StatusCode",
    "StreamRejected",
    "StreamReset",
    "StreamState",
    "TransportConfig",
    "TransportFailed",
    "bounded_message",
    "current_identity",
    "current_peer",
    "describe_connection_error",
    "map_exceptions",
    "nonblocking_unary",
    "open_blocking_channel",
    "open_channel",
    "open_stream_channel",
    "parse_timeout",
    "run_without_loop",
    "transition",
]

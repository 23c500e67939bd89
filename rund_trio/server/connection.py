"""The server's HTTP/2 + gRPC connection state (sans-I/O).

purerpc's ``GRPCConnection`` raises out of ``receive_data`` for anything it
cannot parse — a wrong content-type, a malformed path or grpc-timeout, a
message over the size cap, a compressed message — which ends the whole
connection and every other request on it. ``ServerConnection`` answers each of
these on its own stream instead, with a precise status, and keeps the
connection: errors found in a request's headers are answered here at once (no
handler ever sees the request); errors found in its messages are handed to
the request's handler as a ``StreamRejected`` event, which it answers with.
A rejected request's remaining data is dropped and its flow-control credit
returned, so it cannot wedge the connection.

Compression is not offered: a request naming a ``grpc-encoding`` is
UNIMPLEMENTED (as gRPC specifies for encodings a server does not support), and
a message flagged compressed without one is INVALID_ARGUMENT. Decompressing
would let a small request inflate past the request-size cap.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import Any

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.connection import GRPCConfiguration
from purerpc.grpclib.events import MessageReceived, RequestEnded
from purerpc.grpclib.exceptions import (
    MessageTooLargeError,
    ProtocolError,
    UnsupportedMessageEncodingError,
)

from rund_trio.errors import InvalidRequest, ResourceExhausted, RundError, Unimplemented
from rund_trio.server.status import status_for_exception
from rund_trio.wire.http2 import GrpcConnection

HTTP_UNSUPPORTED_MEDIA_TYPE = 415


class StreamReset:
    """The client sent RST_STREAM for ``stream_id``: it no longer wants the answer."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamRejected(RequestEnded):  # type: ignore[misc]
    """The request on ``stream_id`` cannot be served any further: ``error``
    says why, and is what its handler answers with. To purerpc's stream it is
    the end of the request, so a handler waiting for a message wakes up."""

    def __init__(self, stream_id: int, error: RundError) -> None:
        super().__init__(stream_id)
        self.error = error


class ServerConnection(GrpcConnection):
    """purerpc's server-side connection with per-stream error answers, stream
    resets reported, a cap on request messages, and a cap on concurrent
    streams (advertised in SETTINGS; h2 ends a connection whose client exceeds
    it with GOAWAY).

    purerpc applies ``config.max_message_length`` to messages both ways and
    opens receive windows at twice it; ``max_request_size`` caps requests
    alone, so it must not exceed it (or a request could not fit the window).
    """

    def __init__(
        self, config: GRPCConfiguration, *, max_request_size: int, max_concurrent_streams: int
    ) -> None:
        assert max_request_size <= config.max_message_length
        self.MAX_CONCURRENT_STREAMS = max_concurrent_streams  # read by the base's __init__
        super().__init__(config=config)
        self._max_request_size = max_request_size

    def _stream_reset(self, event: h2.events.StreamReset) -> list[Any]:
        self.message_read_buffers.pop(event.stream_id, None)
        return [StreamReset(event.stream_id)]

    def _request_received(self, event: h2.events.RequestReceived) -> list[Any]:
        headers = dict(event.headers)
        content_type = headers.get("content-type", "")
        if not content_type.startswith("application/grpc"):
            # As grpc-go: HTTP 415 so that plain HTTP clients see an error too.
            self._reject(
                event,
                InvalidRequest(
                    f"content-type {content_type!r} is not gRPC (application/grpc expected)"
                ),
                http_status=HTTP_UNSUPPORTED_MEDIA_TYPE,
            )
            return []
        encoding = headers.get("grpc-encoding", "identity")
        if encoding != "identity":
            self._reject(
                event,
                Unimplemented(
                    f"grpc-encoding {encoding!r} is not supported: send messages uncompressed"
                ),
            )
            return []
        if event.stream_ended:
            self._reject(event, InvalidRequest("the request has no message"))
            return []
        try:
            events: list[Any] = super()._request_received(event)
        except (ProtocolError, KeyError, ValueError, OverflowError) as error:
            self._reject(event, InvalidRequest(f"malformed gRPC request headers: {error}"))
            return []
        self.message_read_buffers[event.stream_id]._max_message_length = self._max_request_size
        return events

    def _reject(
        self, event: h2.events.RequestReceived, error: RundError, http_status: int = 200
    ) -> None:
        """Answer a request from its headers alone and stop reading it."""
        status = status_for_exception(error)
        self.h2_connection.send_headers(
            event.stream_id,
            [
                (":status", str(http_status)),
                ("content-type", "application/grpc"),
                ("grpc-status", str(status.int_value)),
                ("grpc-message", urllib.parse.quote(status.status_message, safe="")),
            ],
            end_stream=True,
        )
        self.stop_reading(event.stream_id)

    def stop_reading(self, stream_id: int) -> None:
        """Tell a client still sending on a stream that was answered to stop
        (RST_STREAM NO_ERROR, as gRPC servers do); nothing if it had ended it."""
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2_connection.reset_stream(stream_id, ErrorCodes.NO_ERROR)

    def _data_received(self, event: h2.events.DataReceived) -> list[Any]:
        buffer = self.message_read_buffers.get(event.stream_id)
        if buffer is None:
            # A rejected request still sending: drop its data, credit the window.
            self.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
            return []
        error: RundError
        try:
            buffer.data_received(event.data, event.flow_controlled_length)
        except MessageTooLargeError:
            error = ResourceExhausted(
                f"the request message is {buffer._message_length} bytes; at most "
                f"{self._max_request_size} bytes are accepted (--max-request-size)"
            )
        except UnsupportedMessageEncodingError:
            error = InvalidRequest(
                "a message is flagged compressed but the request names no grpc-encoding"
            )
        else:
            return [
                MessageReceived(event.stream_id, message, length)
                for message, length in buffer.read_all_complete_messages_flowcontrol()
            ]
        return self._reject_messages(event.stream_id, buffer, error)

    def _stream_ended(self, event: h2.events.StreamEnded) -> list[Any]:
        buffer = self.message_read_buffers.pop(event.stream_id, None)
        if buffer is not None and (buffer._message_length is not None or len(buffer._buffer)):
            expected = (
                f"{buffer._message_length}" if buffer._message_length is not None else "5 (header)"
            )
            error = InvalidRequest(
                f"the request ended inside a message: {len(buffer._buffer)} of {expected} "
                "bytes arrived"
            )
            return [
                *self._reject_messages(event.stream_id, buffer, error),
                RequestEnded(event.stream_id),
            ]
        return [RequestEnded(event.stream_id)]

    def _reject_messages(
        self, stream_id: int, buffer: MessageReadBuffer, error: RundError
    ) -> list[Any]:
        self.message_read_buffers.pop(stream_id, None)
        self.acknowledge_received_data(stream_id, _unread_flow_controlled_bytes(buffer))
        return [StreamRejected(stream_id, error)]


def _unread_flow_controlled_bytes(buffer: MessageReadBuffer) -> int:
    """What ``buffer`` holds that no handler will read, as flow-controlled bytes
    (purerpc keeps these counts only in its parser's private state)."""
    header = buffer._flow_controlled_length or 0
    partial = sum(length for _data, length in buffer._buffer._deque)
    parsed = sum(length for _message, length in buffer._messages)
    return int(header + partial + parsed)

"""``RundClient``: the daemon's four RPCs as typed async methods.

Every failure surfaces as a ``rund_trio.errors.RundError``: ``ConnectionFailed``
when the daemon cannot be reached or the TLS handshake fails, ``RpcError`` (with
the gRPC status code) when the daemon answers with an error.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import h2.errors
import h2.exceptions
import purerpc
from google.protobuf.message import Message
from purerpc.grpclib.exceptions import RpcFailedError
from purerpc.wrappers import (
    extract_message_from_singleton_stream,
    send_single_message_client,
    stream_to_async_iterator,
)

from rund_trio.api import rund_pb2 as pb
from rund_trio.api.rund_grpc import JobControllerStub
from rund_trio.client.channel import CONNECTION_LOST, Channel, open_channel
from rund_trio.client.diagnose import Diagnosed, check_dial_address, diagnose_connect
from rund_trio.errors import ConnectionFailed, ResourceExhausted, RpcError
from rund_trio.server.address import parse_address
from rund_trio.wire.job_log import LogChunk


def _rpc_error(error: RpcFailedError, channel: Channel) -> RpcError | ConnectionFailed:
    status = error.status
    message = status.status_message or ""
    if status.status_code.name == "UNAVAILABLE" and message.startswith(CONNECTION_LOST):
        return channel.lost()
    return RpcError(status.status_code.name, message)


class RundClient:
    """A connection to one daemon. Use ``RundClient.connect`` to make one."""

    def __init__(self, stub: JobControllerStub, channel: Channel) -> None:
        self._stub = stub
        self._channel = channel
        # Log responses decoded by hand (see rund_trio.wire.job_log)
        self._client = purerpc.Client("rund.JobController", channel)

    @classmethod
    @asynccontextmanager
    async def connect(cls, addr: str, ssl_context: ssl.SSLContext) -> AsyncIterator[RundClient]:
        """Connect to the daemon at ``addr`` (``host:port``) over mutual TLS.

        The connection is closed when the block exits, whatever happens in it.
        """
        check_dial_address(addr)
        host, port = parse_address(addr, default_host="localhost")
        assert host is not None
        async with AsyncExitStack() as stack:
            try:
                channel = await stack.enter_async_context(open_channel(host, port, ssl_context))
            except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream) as error:
                raise Diagnosed(diagnose_connect(error, addr, host)) from None
            yield cls(JobControllerStub(channel), channel)

    async def start(self, request: pb.JobStartRequest) -> str:
        """Start a job; returns its id."""
        reply: pb.JobIdentifier = await self._call(self._stub.Start, request)
        return reply.ulid

    async def stop(self, job_id: str, grace: timedelta | None = None) -> pb.JobStatus:
        request = pb.JobStopRequest(ulid=job_id)
        if grace is not None:
            request.grace_period.FromTimedelta(grace)
        status: pb.JobStatus = await self._call(self._stub.Stop, request)
        return status

    async def status(self, job_id: str) -> pb.JobStatus:
        status: pb.JobStatus = await self._call(self._stub.Status, pb.JobIdentifier(ulid=job_id))
        return status

    async def log(
        self,
        job_id: str,
        *,
        follow: bool = True,
        tail_lines: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[LogChunk]:
        """The job's output as chunks with ``stdout`` and ``stderr`` bytes (like
        ``pb.JobLog``), in the order the daemon read it: by default from the
        beginning until the job's output ended. ``follow=False``: only what is
        recorded now; ``tail_lines``: from the last N lines; ``since``: what was
        recorded from then on; ``timestamps``: each chunk with ``recorded_at``."""
        request = pb.JobLogRequest(ulid=job_id, no_follow=not follow, timestamps=timestamps)
        if tail_lines is not None:
            request.tail_lines.value = tail_lines
        if since is not None:
            request.since.FromDatetime(since)
        try:
            # Log responses are decoded by hand (see rund_trio.wire.job_log).
            stream = await self._client.rpc("Log", pb.JobLogRequest, LogChunk)
            try:
                await send_single_message_client(stream, request)
                async for chunk in stream_to_async_iterator(stream):
                    yield chunk
            finally:
                await _abandon(stream)
        except h2.exceptions.TooManyStreamsError:
            raise _too_many_calls() from None
        except RpcFailedError as error:
            raise _rpc_error(error, self._channel) from None
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as error:
            raise self._channel.lost(error) from None

    async def _call(self, method: Any, request: Message) -> Any:
        try:
            return await _unary_call(method, request)
        except h2.exceptions.TooManyStreamsError:
            raise _too_many_calls() from None
        except RpcFailedError as error:
            raise _rpc_error(error, self._channel) from None
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as error:
            raise self._channel.lost(error) from None


async def _abandon(stream: Any) -> None:
    """Reset a call whose answer did not end (the caller stopped reading):
    the daemon then ends its side and frees the stream at once. Never
    suspends, so it is safe where a generator is being closed."""
    if stream.end_stream_event is not None:
        return
    with contextlib.suppress(h2.exceptions.ProtocolError):
        stream._grpc_connection.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
        await stream._socket.flush()


def _too_many_calls() -> ResourceExhausted:
    return ResourceExhausted(
        "this connection already has as many calls open as the daemon allows "
        "(its --max-streams-per-connection); end one or open another connection"
    )


async def _unary_call(method: Any, request: Message) -> Any:
    """purerpc's unary call, except that a request the daemon answered and
    reset before it was all sent (one over its size cap, refused from its
    first bytes) reports the daemon's status instead of h2's StreamClosedError."""
    stream = await method._stream_fn()
    with contextlib.suppress(h2.exceptions.StreamClosedError):
        await stream.send_message(request)
    await stream.close()
    return await extract_message_from_singleton_stream(stream)

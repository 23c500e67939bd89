"""``RundClient``: the daemon's RPCs as typed async methods.

Every failure surfaces as a ``rund_trio.errors.RundError``: ``ConnectionFailed``
when the daemon cannot be reached, the TLS handshake fails or the connection
ends, ``RpcError`` (with the gRPC status code) when the daemon answers with an
error. The gRPC connection itself is ``rund_trio.rpc.Channel``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from datetime import timedelta

from rund_trio.address import parse_address
from rund_trio.api import rund_pb2 as pb
from rund_trio.rpc import Channel, open_channel
from rund_trio.rpc._tls import ByteStream
from rund_trio.wire.job_log import LogChunk

SERVICE = "rund.JobController"


def _log_chunk(data: bytes) -> LogChunk:
    chunk = LogChunk()
    chunk.ParseFromString(data)
    return chunk


class RundClient:
    """A connection to one daemon. Use ``RundClient.connect`` to make one."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, addr: str, ssl_context: ssl.SSLContext, *, transport: ByteStream | None = None
    ) -> AsyncIterator[RundClient]:
        """Connect to the daemon at ``addr`` (``host:port``) over mutual TLS
        (over ``transport`` when given, e.g. a memory stream in tests).

        The connection is closed when the block exits, whatever happens in it.
        """
        host, port = parse_address(addr, default_host="localhost")
        assert host is not None
        async with open_channel(host, port, ssl_context, transport=transport) as channel:
            yield cls(channel)

    async def start(self, request: pb.JobStartRequest) -> str:
        """Start a job; returns its id."""
        reply = await self._channel.unary_unary(
            SERVICE, "Start", request, pb.JobIdentifier.FromString
        )
        return reply.ulid

    async def stop(self, job_id: str, grace: timedelta | None = None) -> pb.JobStatus:
        request = pb.JobStopRequest(ulid=job_id)
        if grace is not None:
            request.grace_period.FromTimedelta(grace)
        return await self._channel.unary_unary(SERVICE, "Stop", request, pb.JobStatus.FromString)

    async def status(self, job_id: str) -> pb.JobStatus:
        return await self._channel.unary_unary(
            SERVICE, "Status", pb.JobIdentifier(ulid=job_id), pb.JobStatus.FromString
        )

    async def list_jobs(
        self,
        filter: pb.JobListFilter.ValueType = pb.JOB_LIST_FILTER_ALL,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.JobListResponse:
        """One page of the caller's jobs, newest first (see ``all_jobs``)."""
        request = pb.JobListRequest(filter=filter, page_size=page_size, page_token=page_token)
        return await self._channel.unary_unary(
            SERVICE, "List", request, pb.JobListResponse.FromString
        )

    async def all_jobs(
        self, filter: pb.JobListFilter.ValueType = pb.JOB_LIST_FILTER_ALL
    ) -> AsyncIterator[pb.JobStatus]:
        """Every job of the caller's, newest first, page after page."""
        token = ""
        while True:
            page = await self.list_jobs(filter, page_token=token)
            for status in page.jobs:
                yield status
            token = page.next_page_token
            if not token:
                return

    async def wait(self, job_id: str) -> pb.JobStatus:
        """The job's final status, once it has ended."""
        return await self._channel.unary_unary(
            SERVICE, "Wait", pb.JobWaitRequest(ulid=job_id), pb.JobStatus.FromString
        )

    async def remove(self, job_id: str, *, force: bool = False) -> pb.JobStatus:
        """Forget an ended job (with ``force``, stop a running one first); its last status."""
        request = pb.JobRemoveRequest(ulid=job_id, force=force)
        return await self._channel.unary_unary(SERVICE, "Remove", request, pb.JobStatus.FromString)

    async def log(self, job_id: str) -> AsyncIterator[LogChunk]:
        """The job's output from the beginning until it ended, as chunks with
        ``stdout`` and ``stderr`` bytes (like ``pb.JobLog``). Closing the
        iterator early abandons the call: the daemon ends its side at once."""
        # Log responses are decoded by hand (see rund_trio.wire.job_log).
        responses = self._channel.unary_stream(
            SERVICE, "Log", pb.JobIdentifier(ulid=job_id), _log_chunk
        )
        async with aclosing(responses):
            async for chunk in responses:
                yield chunk

"""``RundClient``: the daemon's RPCs as typed async methods.

Every failure surfaces as a ``rund_trio.errors.RundError``: ``Diagnosed`` (a
``ConnectionFailed`` saying which side is wrong, ``client.diagnose``) when the
daemon cannot be reached, the TLS handshake fails, the server is no gRPC
daemon or the connection ends; ``RpcError`` (with the gRPC status code) when
the daemon answers with an error. The gRPC connection itself is
``rund_trio.rpc.Channel``; it reports the facts (``TransportFailed``), this
module has them explained.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from rund_trio.address import parse_address
from rund_trio.api import rund_pb2 as pb
from rund_trio.client.diagnose import (
    Diagnosed,
    check_dial_address,
    diagnose_connect,
    diagnose_lost,
    diagnose_not_grpc,
)
from rund_trio.errors import RpcError, sole_exception
from rund_trio.rpc._failures import Stage, TransportFailed
from rund_trio.wire.job_log import LogChunk, framed_input_message

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from rund_trio.rpc._blocking import BlockingChannel
    from rund_trio.rpc._client import Channel
    from rund_trio.rpc._tls import ByteStream

# anyio (and asyncio under it) is imported by the calls that need an event
# loop: a one-shot command on a blocking channel (``connect_blocking``) never
# pays for it.

SERVICE = "rund.JobController"


def _log_chunk(data: bytes) -> LogChunk:
    chunk = LogChunk()
    chunk.ParseFromString(data)
    return chunk


class RundClient:
    """A connection to one daemon. Use ``RundClient.connect`` (or, for a
    process that makes a few unary calls and exits, ``connect_blocking``)."""

    def __init__(self, channel: Channel | BlockingChannel, addr: str) -> None:
        self._channel = channel
        self._addr = addr

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, addr: str, ssl_context: ssl.SSLContext, *, transport: ByteStream | None = None
    ) -> AsyncIterator[RundClient]:
        """Connect to the daemon at ``addr`` (``host:port``) over mutual TLS
        (over ``transport`` when given, e.g. a memory stream in tests).

        The connection is closed when the block exits, whatever happens in it.

        Raises:
            ConfigError: ``addr`` is a URL, not ``host:port``.
            Diagnosed: the connection could not be made, or it ended.
        """
        from rund_trio.rpc._client import open_channel

        host, port, shown = _dial_address(addr)
        with _diagnosed(shown, host):
            async with open_channel(host, port, ssl_context, transport=transport) as channel:
                yield cls(channel, shown)

    @classmethod
    @contextmanager
    def connect_blocking(cls, addr: str, ssl_context: ssl.SSLContext) -> Iterator[RundClient]:
        """``connect`` with blocking I/O and no event loop, for a process that
        makes a few unary calls and exits: the unary methods never suspend
        (run them with ``rund_trio.rpc.run_without_loop``); ``log`` and
        ``input`` need ``connect``. Raises as ``connect`` does."""
        from rund_trio.rpc._blocking import open_blocking_channel

        host, port, shown = _dial_address(addr)
        with _diagnosed(shown, host), open_blocking_channel(host, port, ssl_context) as channel:
            yield cls(channel, shown)

    def _streaming(self) -> Channel:
        """The channel, for a call that streams (it needs an event loop)."""
        from rund_trio.rpc._client import Channel

        if not isinstance(self._channel, Channel):
            raise TypeError("streaming calls need RundClient.connect, not connect_blocking")
        return self._channel

    async def start(self, request: pb.JobStartRequest) -> str:
        """Start a job; returns its id."""
        with _diagnosed(self._addr):
            reply = await self._channel.unary_unary(
                SERVICE, "Start", request, pb.JobIdentifier.FromString
            )
        return reply.ulid

    async def stop(self, job_id: str, grace: timedelta | None = None) -> pb.JobStatus:
        request = pb.JobStopRequest(ulid=job_id)
        if grace is not None:
            request.grace_period.FromTimedelta(grace)
        with _diagnosed(self._addr):
            return await self._channel.unary_unary(
                SERVICE, "Stop", request, pb.JobStatus.FromString
            )

    async def status(self, job_id: str) -> pb.JobStatus:
        with _diagnosed(self._addr):
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
        with _diagnosed(self._addr):
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
        with _diagnosed(self._addr):
            return await self._channel.unary_unary(
                SERVICE, "Wait", pb.JobWaitRequest(ulid=job_id), pb.JobStatus.FromString
            )

    async def remove(self, job_id: str, *, force: bool = False) -> pb.JobStatus:
        """Forget an ended job (with ``force``, stop a running one first); its last status."""
        request = pb.JobRemoveRequest(ulid=job_id, force=force)
        with _diagnosed(self._addr):
            return await self._channel.unary_unary(
                SERVICE, "Remove", request, pb.JobStatus.FromString
            )

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
        recorded from then on; ``timestamps``: each chunk with ``recorded_at``.
        Closing the iterator early abandons the call: the daemon ends its side
        at once."""
        request = pb.JobLogRequest(ulid=job_id, no_follow=not follow, timestamps=timestamps)
        if tail_lines is not None:
            request.tail_lines.value = tail_lines
        if since is not None:
            request.since.FromDatetime(since)
        # Log responses are decoded by hand (see rund_trio.wire.job_log).
        responses = self._streaming().unary_stream(SERVICE, "Log", request, _log_chunk)
        with _diagnosed(self._addr):
            async with aclosing(responses):
                async for chunk in responses:
                    yield chunk

    async def input(self, job_id: str, chunks: AsyncIterable[bytes]) -> int:
        """Feed ``chunks`` to the job's stdin in order; at their end the job's
        stdin pipe is closed (a terminal stays open). Returns the bytes the
        daemon wrote. Each chunk is sent as the HTTP/2 window allows, so a job
        that does not read holds this back. An error from the daemon before
        ``chunks`` ended (no stdin, the job ended) stops the sending at once.

        A job that ends after reading everything sent so far is answered
        early, with what was written; then, as a pipe's writer would, this
        looks at the rest of ``chunks``: their end is success, more bytes (or
        bytes sent that the daemon did not write) are ``RpcError``
        FAILED_PRECONDITION, the job ended before reading all of its input.
        If this is cancelled the call is reset and the job's stdin stays open."""
        with _diagnosed(self._addr):
            return await self._input(job_id, chunks)

    async def _input(self, job_id: str, chunks: AsyncIterable[bytes]) -> int:
        import anyio

        call = self._streaming().start(SERVICE, "Input", pb.JobInputReply.FromString, wake=False)
        reply: pb.JobInputReply | None = None
        sent = 0
        left_over = False
        sending = anyio.CancelScope()
        try:
            try:
                async with anyio.create_task_group() as tasks:

                    async def send() -> None:
                        nonlocal sent, left_over, sending
                        # The id at once: a refusal comes back before any input.
                        await call.send(pb.JobInput(ulid=job_id))
                        # Never cancelled by an answer while it waits for ``chunks``,
                        # so that their rest can be looked at (see ``input``).
                        async for data in chunks:
                            if call.done:
                                left_over = left_over or bool(data)
                                if left_over:
                                    return
                                continue
                            if data:
                                sent += len(data)
                                with anyio.CancelScope() as sending:
                                    # Framed by hand: one copy of the payload.
                                    await call.send(framed_input_message(data), framed=True)
                        call.end()

                    async def receive() -> None:
                        nonlocal reply
                        reply = await call.receive()
                        if reply is None:
                            raise RpcError("INTERNAL", "the daemon answered OK without a message")
                        while await call.receive() is not None:  # the status ends it
                            pass
                        sending.cancel()  # a message on its way will not be read

                    tasks.start_soon(send)
                    tasks.start_soon(receive)
            except BaseExceptionGroup as group:
                raise sole_exception(group) from None
        finally:
            call.abandon()
        assert reply is not None
        if left_over or sent > reply.bytes_written:
            raise RpcError(
                "FAILED_PRECONDITION",
                f"job {job_id} ended before reading all of its input "
                f"({reply.bytes_written} bytes were written)",
            )
        return reply.bytes_written

    async def resize(self, job_id: str, rows: int, cols: int) -> None:
        """Set a terminal job's window size (the job gets SIGWINCH)."""
        with _diagnosed(self._addr):
            await self._channel.unary_unary(
                SERVICE,
                "Resize",
                pb.JobResizeRequest(ulid=job_id, rows=rows, cols=cols),
                pb.JobResizeReply.FromString,
            )


def _dial_address(addr: str) -> tuple[str, int, str]:
    """(host, port, the address as messages show it) of ``--addr``; ``ConfigError`` for a URL."""
    check_dial_address(addr)
    host, port = parse_address(addr, default_host="localhost")
    assert host is not None
    return host, port, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextmanager
def _diagnosed(addr: str, host: str | None = None) -> Iterator[None]:
    """The rpc layer's ``TransportFailed`` as a ``Diagnosed``: one line a
    person can act on (``client.diagnose``). ``host``: as typed in ``--addr``,
    for a name that does not resolve."""
    try:
        yield
    except TransportFailed as error:
        if error.stage is Stage.PROTOCOL:
            diagnosis = diagnose_not_grpc(addr)
        elif error.stage is Stage.CONNECT:
            diagnosis = diagnose_connect(error.cause or error, addr, host or addr)
        else:
            diagnosis = diagnose_lost(error.cause, addr, answered=error.peer_answered)
        raise Diagnosed(diagnosis) from None

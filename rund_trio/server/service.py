"""The JobController service: each RPC validates its request, checks who asks,
and hands over to the supervisor. Errors are raised as ``RundError``s; the
gRPC layer (``rund_trio.rpc``) turns them into statuses."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from rund_trio.api import rund_pb2 as pb
from rund_trio.api.rund_grpc import JobControllerServicer
from rund_trio.errors import InvalidRequest, ResourceExhausted
from rund_trio.isolation import trace
from rund_trio.jobs.paging import PagePosition, decode_token, encode_token, page_size
from rund_trio.jobs.quota import Quota
from rund_trio.jobs.spec import (
    MAX_ARGV_BYTES,
    MAX_ENV_BYTES,
    check_window,
    parse_job_id,
    parse_job_spec,
    parse_terminal,
)
from rund_trio.jobs.supervisor import AnyJob, Supervisor
from rund_trio.rpc import Service, current_identity, nonblocking_unary
from rund_trio.server.convert import (
    grace_from_request,
    isolation_from_request,
    limits_from_request,
    log_query_from_request,
    status_to_proto,
    stdio_to_proto,
)
from rund_trio.wire.job_log import FramedMessage, framed_log_message


class JobControllerService(JobControllerServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        max_log_streams_per_client: int | None,
        max_argv_bytes: int | None = MAX_ARGV_BYTES,
        max_env_bytes: int | None = MAX_ENV_BYTES,
    ) -> None:
        self._supervisor = supervisor
        self._max_argv_bytes = max_argv_bytes
        self._max_env_bytes = max_env_bytes
        self._log_streams = Quota(
            "log streams open", total=None, per_client=max_log_streams_per_client
        )

    @property
    def service(self) -> Service:
        """The service, with Status answered without a task (it never awaits)."""
        service: Service = super().service
        signature = service.methods["Status"].signature
        nonblocking_unary(service, "Status", self.answer_status, signature)
        return service

    @property
    def log_subscribers(self) -> int:
        """Log streams open now."""
        return self._log_streams.count

    def _find(self, job_id: str) -> AnyJob:
        return self._supervisor.find(parse_job_id(job_id), current_identity())

    async def Start(self, request: pb.JobStartRequest) -> pb.JobIdentifier:
        trace.mark("daemon start-rpc")
        spec = parse_job_spec(
            request.name,
            tuple(request.args),
            limits_from_request(request),
            isolation_from_request(request),
            max_argv_bytes=self._max_argv_bytes,
            env=request.env,
            max_env_bytes=self._max_env_bytes,
            working_dir=request.working_dir,
            stdin=request.stdin,
            terminal=parse_terminal(
                request.tty, request.tty_rows, request.tty_cols, request.tty_term
            ),
        )
        trace.mark("daemon start-parsed")
        job = await self._supervisor.start(spec, current_identity())
        trace.mark("daemon start-returns")
        return pb.JobIdentifier(ulid=job.job_id)

    async def Stop(self, request: pb.JobStopRequest) -> pb.JobStatus:
        job = self._find(request.ulid)
        grace = grace_from_request(request)
        return stdio_to_proto(job, status_to_proto(await self._supervisor.stop(job, grace)))

    async def Status(self, request: pb.JobIdentifier) -> pb.JobStatus:
        return self.answer_status(request)

    def answer_status(self, request: pb.JobIdentifier) -> pb.JobStatus:
        """Status, at once: it reads the job's state and never awaits."""
        job = self._find(request.ulid)
        return stdio_to_proto(job, status_to_proto(job.snapshot()))

    async def Log(self, request: pb.JobLogRequest) -> AsyncIterator[FramedMessage]:
        """``pb.JobLog`` messages, encoded here (see ``log_messages``)."""
        job = self._find(request.ulid)
        query = log_query_from_request(request)
        with self._log_streams.held(current_identity().sans):
            async with aclosing(self._supervisor.follow(job, query)) as pieces:
                async for piece in pieces:
                    yield framed_log_message(piece)
        # The stream is complete; say so honestly when it is not all the job wrote.
        output = job.snapshot().output
        if output.dropped_bytes:
            raise ResourceExhausted(
                f"{output.dropped_bytes} bytes of this job's output were dropped and are not "
                f"in this log: {output.error}"
            )

    async def List(self, request: pb.JobListRequest) -> pb.JobListResponse:
        """The caller's jobs (sharing a SAN with it), newest first, one page."""
        if request.filter not in _FILTERS:
            raise InvalidRequest(f"unknown filter {request.filter}")
        limit = page_size(request.page_size)
        mac = self._supervisor.store.page_token_mac
        after = (
            decode_token(request.page_token, request.filter, mac).after
            if request.page_token
            else None
        )
        snapshots = self._supervisor.list(
            current_identity(), _FILTERS[request.filter], after, limit + 1
        )
        response = pb.JobListResponse(
            jobs=[status_to_proto(snapshot) for snapshot in snapshots[:limit]]
        )
        if len(snapshots) > limit:
            position = PagePosition(request.filter, snapshots[limit - 1].job_id)
            response.next_page_token = encode_token(position, mac)
        return response

    async def Wait(self, request: pb.JobWaitRequest) -> pb.JobStatus:
        """The job's final status, once it has ended."""
        return status_to_proto(await self._supervisor.wait(self._find(request.ulid)))

    async def Remove(self, request: pb.JobRemoveRequest) -> pb.JobStatus:
        """Forget an ended job (or, with force, stop and forget a running one)."""
        job = self._find(request.ulid)
        return status_to_proto(await self._supervisor.remove(job, force=request.force))

    async def Input(self, requests: AsyncIterator[pb.JobInput]) -> pb.JobInputReply:
        """Client-streaming: the first message names the job (and may carry
        data); every message's ``data`` goes to the job's stdin in order, each
        read from the client only once the previous one was written, so the
        HTTP/2 window holds back a sender whose job does not read."""
        first = await anext(requests, None)
        if first is None:
            raise InvalidRequest("the Input stream has no message: its first names the job")
        job = self._find(first.ulid)

        async def chunks() -> AsyncGenerator[bytes, None]:
            if first.data:
                yield first.data
            async for message in requests:
                if message.ulid and message.ulid != first.ulid:
                    raise InvalidRequest("an Input stream feeds one job: only its first names it")
                data = message.data  # each access copies the bytes out of the message
                if data:
                    yield data

        async with aclosing(chunks()) as data:
            written = await self._supervisor.feed(job, data)
        return pb.JobInputReply(bytes_written=written)

    async def Resize(self, request: pb.JobResizeRequest) -> pb.JobResizeReply:
        job = self._find(request.ulid)
        check_window(request.rows, request.cols)
        if not request.rows or not request.cols:
            raise InvalidRequest("a terminal's rows and columns must both be at least 1")
        self._supervisor.resize(job, request.rows, request.cols)
        return pb.JobResizeReply()


_FILTERS: dict[int, bool | None] = {
    pb.JOB_LIST_FILTER_ALL: None,
    pb.JOB_LIST_FILTER_RUNNING: False,
    pb.JOB_LIST_FILTER_ENDED: True,
}

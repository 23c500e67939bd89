"""The JobController service: each RPC validates its request, checks who asks,
and hands over to the supervisor. Errors are raised as ``RundError``s; the
gRPC layer (``rund_trio.rpc``) turns them into statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from rund_trio.api import rund_pb2 as pb
from rund_trio.api.rund_grpc import JobControllerServicer
from rund_trio.errors import InvalidRequest, ResourceExhausted
from rund_trio.jobs.paging import PagePosition, decode_token, encode_token, page_size
from rund_trio.jobs.quota import Quota
from rund_trio.jobs.spec import MAX_ARGV_BYTES, parse_job_id, parse_job_spec
from rund_trio.jobs.supervisor import AnyJob, Supervisor
from rund_trio.rpc import current_identity
from rund_trio.server.convert import (
    grace_from_request,
    isolation_from_request,
    limits_from_request,
    status_to_proto,
)
from rund_trio.wire.job_log import FramedMessage, framed_log_message


class JobControllerService(JobControllerServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        max_log_streams_per_client: int | None,
        max_argv_bytes: int | None = MAX_ARGV_BYTES,
    ) -> None:
        self._supervisor = supervisor
        self._max_argv_bytes = max_argv_bytes
        self._log_streams = Quota(
            "log streams open", total=None, per_client=max_log_streams_per_client
        )

    @property
    def log_subscribers(self) -> int:
        """Log streams open now."""
        return self._log_streams.count

    def _find(self, job_id: str) -> AnyJob:
        return self._supervisor.find(parse_job_id(job_id), current_identity())

    async def Start(self, request: pb.JobStartRequest) -> pb.JobIdentifier:
        spec = parse_job_spec(
            request.name,
            tuple(request.args),
            limits_from_request(request),
            isolation_from_request(request),
            max_argv_bytes=self._max_argv_bytes,
        )
        job = await self._supervisor.start(spec, current_identity())
        return pb.JobIdentifier(ulid=job.job_id)

    async def Stop(self, request: pb.JobStopRequest) -> pb.JobStatus:
        job = self._find(request.ulid)
        grace = grace_from_request(request)
        return status_to_proto(await self._supervisor.stop(job, grace))

    async def Status(self, request: pb.JobIdentifier) -> pb.JobStatus:
        return status_to_proto(self._find(request.ulid).snapshot())

    async def Log(self, request: pb.JobIdentifier) -> AsyncIterator[FramedMessage]:
        """``pb.JobLog`` messages, encoded here (see ``log_messages``)."""
        job = self._find(request.ulid)
        with self._log_streams.held(current_identity().sans):
            async with aclosing(self._supervisor.follow(job)) as pieces:
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


_FILTERS: dict[int, bool | None] = {
    pb.JOB_LIST_FILTER_ALL: None,
    pb.JOB_LIST_FILTER_RUNNING: False,
    pb.JOB_LIST_FILTER_ENDED: True,
}

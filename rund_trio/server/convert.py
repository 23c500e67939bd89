"""Translation between the wire messages and the job layer's values."""

from __future__ import annotations

import time
from datetime import datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import UInt32Value, UInt64Value

from rund_trio.api import rund_pb2 as pb
from rund_trio.cgroups.limits import Limits
from rund_trio.errors import InvalidRequest
from rund_trio.jobs.isolation_policy import IsolationRequest, Network, Profile
from rund_trio.jobs.state import JobSnapshot, JobState
from rund_trio.jobs.supervisor import AnyJob, Job
from rund_trio.logs.query import LogQuery, validate_log_query

MAX_GRACE_SECONDS = 3600.0

_STATES = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.EXITED: pb.JOB_STATE_EXITED,
    JobState.KILLED: pb.JOB_STATE_KILLED,
    JobState.STOPPED: pb.JOB_STATE_STOPPED,
    JobState.LOST: pb.JOB_STATE_LOST,
}


def limits_from_request(request: pb.JobStartRequest) -> Limits:
    """The limits a Start request sets; unset wrapper fields mean no limit."""

    def value(wrapper: UInt32Value | UInt64Value, present: bool) -> int | None:
        return wrapper.value if present else None

    return Limits(
        cpu_quota_us=value(request.max_cpu_bandwidth, request.HasField("max_cpu_bandwidth")),
        memory_bytes=value(request.max_memory_usage, request.HasField("max_memory_usage")),
        io_rbps=value(request.max_rbps, request.HasField("max_rbps")),
        io_wbps=value(request.max_wbps, request.HasField("max_wbps")),
        io_riops=value(request.max_riops, request.HasField("max_riops")),
        io_wiops=value(request.max_wiops, request.HasField("max_wiops")),
    )


_NETWORKS = {
    pb.JOB_NETWORK_DEFAULT: None,
    pb.JOB_NETWORK_HOST: Network.HOST,
    pb.JOB_NETWORK_ISOLATED: Network.ISOLATED,
}


_PROFILES = {
    pb.JOB_PROFILE_DEFAULT: None,
    pb.JOB_PROFILE_CONTAINED: Profile.CONTAINED,
    pb.JOB_PROFILE_HOST: Profile.HOST,
}
_PROFILES_OUT = {Profile.CONTAINED: pb.JOB_PROFILE_CONTAINED, Profile.HOST: pb.JOB_PROFILE_HOST}


def isolation_from_request(request: pb.JobStartRequest) -> IsolationRequest:
    """The containment a Start request asks for; InvalidRequest for an
    unknown network or profile value."""
    if request.network not in _NETWORKS:
        raise InvalidRequest(f"unknown network {request.network}")
    if request.profile not in _PROFILES:
        raise InvalidRequest(
            f"unknown profile {request.profile} (known: 0 default, 1 contained, 2 host)"
        )
    return IsolationRequest(
        profile=_PROFILES[request.profile],
        network=_NETWORKS[request.network],
        uid=request.uid.value if request.HasField("uid") else None,
        gid=request.gid.value if request.HasField("gid") else None,
    )


def grace_from_request(request: pb.JobStopRequest) -> float:
    """Stop's grace period in seconds (0 when unset); InvalidRequest when it is
    negative or longer than an hour."""
    if not request.HasField("grace_period"):
        return 0.0
    seconds = request.grace_period.ToNanoseconds() / 1e9
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise InvalidRequest(
            f"grace_period must be between 0 and {MAX_GRACE_SECONDS:.0f} seconds, got {seconds}"
        )
    return seconds


def _set_duration(field: Duration, seconds: float) -> None:
    """Set a (present, even when zero) Duration in place: building one and
    copying it in costs three times as much, on every Status."""
    nanoseconds = max(0, round(seconds * 1e9))
    field.seconds = nanoseconds // 10**9
    field.nanos = nanoseconds % 10**9


def _set_timestamp(field: Timestamp, moment: datetime) -> None:
    """``Timestamp.FromDatetime`` in place, without its time tuple (a fifth of a List)."""
    microseconds = round(moment.timestamp() * 1e6)
    field.seconds = microseconds // 10**6
    field.nanos = microseconds % 10**6 * 1000


def status_to_proto(snapshot: JobSnapshot) -> pb.JobStatus:
    usage = snapshot.usage
    output = snapshot.output
    status = pb.JobStatus(
        stopped=snapshot.stopped,
        killed=snapshot.killed,
        memory_current=usage.memory_current,
        state=_STATES[snapshot.state],
        signal_name=snapshot.signal_name or "",
        pid=snapshot.pid,
        name=snapshot.argv[0],
        args=snapshot.argv[1:],
        output_bytes=output.recorded_bytes,
        output_dropped_bytes=output.dropped_bytes,
        memory_peak=usage.memory_peak,
        oom_killed=usage.oom_kills > 0,
        cpu_throttled_periods=usage.cpu_throttled_periods,
        io_read_bytes=usage.io_read_bytes,
        io_write_bytes=usage.io_write_bytes,
        output_error=output.error or "",
        profile=_PROFILES_OUT[snapshot.profile],
        ulid=snapshot.job_id,
    )
    _set_duration(status.user_time, usage.user_time)
    _set_duration(status.system_time, usage.system_time)
    _set_duration(status.cpu_throttled_time, usage.cpu_throttled_time)
    if snapshot.exit_code is not None:
        status.exit_code.value = snapshot.exit_code
    if snapshot.signal is not None:
        status.signal.value = snapshot.signal
    _set_timestamp(status.started_at, snapshot.started_at)
    if snapshot.ended_at is not None:
        _set_timestamp(status.ended_at, snapshot.ended_at)
    return status


def stdio_to_proto(job: AnyJob, status: pb.JobStatus) -> pb.JobStatus:
    """``status`` with how ``job`` was started: its directory, stdin and terminal."""
    if not isinstance(job, Job):  # ended, read from the job database
        started_with = job.stored.stdio
        status.working_dir = started_with.working_dir
        status.stdin = started_with.stdin
        status.tty = started_with.tty
        return status
    stdio = job.stdio
    status.working_dir = job.working_dir
    status.stdin = stdio is not None and stdio.feedable
    status.tty = stdio is not None and stdio.terminal is not None
    status.stdin_open = stdio is not None and stdio.open and job.record.running
    return status


def log_query_from_request(request: pb.JobLogRequest, now: int | None = None) -> LogQuery:
    """The options of a Log request, checked against the daemon's clock
    (``now``, ns since the epoch; default: the current time)."""
    since = None
    if request.HasField("since"):
        if not 0 <= request.since.nanos < 1_000_000_000:
            raise InvalidRequest("since: nanos must be from 0 to 999999999")
        since = request.since.seconds * 1_000_000_000 + request.since.nanos
    query = LogQuery(
        follow=not request.no_follow,
        tail_lines=request.tail_lines.value if request.HasField("tail_lines") else None,
        since=since,
        timestamps=request.timestamps,
    )
    return validate_log_query(query, now=time.time_ns() if now is None else now)

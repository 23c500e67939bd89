"""The audit trail: who asked the daemon for what, and how each job ended.

One JSON line per finished call, allowed or refused (``event: "rpc"``), and
one per ended job (``event: "job_ended"``) with the SHA-256 of its journal
file, so an auditor can tell later whether a kept journal was altered.

A journal's hash is computed from the file once the job has ended, in a
worker thread: output reaches the journal by ``splice(2)`` without passing
through the daemon's memory, so hashing it as it is recorded would mean
copying every byte through the daemon (measured: see the README). The
journal is opened when the job ends, so a journal removed meanwhile is still
hashed whole.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio
from google.protobuf.message import Message
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rund_trio.errors import Unavailable
from rund_trio.logs.journal import Stream
from rund_trio.observe.audit_log import AuditLog
from rund_trio.server.calls import CallRecord, HandshakeOutcome

if TYPE_CHECKING:
    from rund_trio.jobs.supervisor import Job

START = "/rund.JobController/Start"
HASH_CHUNK = 1024 * 1024
DRAIN_TIMEOUT = 30.0
"""Seconds the daemon waits at exit for the hashes of jobs that just ended."""

_started_job: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "rund_audit_started_job"
)
"""The id and resolved profile of the job a Start call started, set in the call's own task."""

_LIMIT_FIELDS = (
    "max_cpu_bandwidth",
    "max_memory_usage",
    "max_rbps",
    "max_wbps",
    "max_riops",
    "max_wiops",
)


def _now(at: float | None = None) -> str:
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _has(message: Message, name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


def _job_id(request: Message | None) -> str | None:
    """A request's job id: field 1 (``ulid``) of every job request."""
    if request is not None and _has(request, "ulid"):
        return str(request.ulid)  # type: ignore[attr-defined]
    return None


def describe_start(request: Message) -> dict[str, Any]:
    """What an audit line says of a Start request: its command line, limits,
    user, network and the names (never the values) of its environment."""
    fields: Any = request  # a JobStartRequest
    limits = {name: getattr(fields, name).value for name in _LIMIT_FIELDS if fields.HasField(name)}
    network = fields.DESCRIPTOR.fields_by_name["network"].enum_type.values_by_number
    env_names = [entry.partition("=")[0] for entry in fields.env] if _has(request, "env") else []
    return {
        "argv": [fields.name, *fields.args],
        "limits": limits,
        "uid": fields.uid.value if fields.HasField("uid") else None,
        "gid": fields.gid.value if fields.HasField("gid") else None,
        "network": network[fields.network].name if fields.network in network else fields.network,
        "env_names": env_names,
    }


def rpc_line(record: CallRecord) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": _now(record.started_at),
        "event": "rpc",
        "peer": record.peer,
        "sans": sorted(record.identity.sans),
        "certificate_sha256": record.certificate_sha256,
        "method": record.method,
        "job_id": _job_id(record.request),
    }
    if record.method == START:
        job_id, profile = _started_job.get((None, None))
        line["job_id"] = job_id
        line["profile"] = profile  # what policy decided, not only what was asked
        if record.request is not None:
            line["start"] = describe_start(record.request)
    line["code"] = record.code
    if record.message:
        line["message"] = record.message
    line["duration_seconds"] = round(record.duration, 6)
    return line


def journal_sha256(fd: int, size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of the open file ``fd`` (then closed)."""
    digest = hashlib.sha256()
    try:
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


class AuditTrail:
    """An ``Observer`` and ``JobEvents`` writing the audit log. Call lines are
    written at once, on the request's task; job-end lines once the journal is
    hashed, by the task ``running`` hosts."""

    def __init__(self, audit_log: AuditLog, *, required: bool = False) -> None:
        self.log = audit_log
        self.required = required
        self._ended_send, self._ended_receive = trio.open_memory_channel[
            tuple[dict[str, Any], int]
        ](math.inf)
        self._pending = 0
        self._idle = trio.lowlevel.ParkingLot()
        self._worker_scope = trio.CancelScope(shield=True)
        """The hashing task outlives the daemon's cancellation: the lines of
        jobs killed at shutdown are written too (see ``running``)."""

    def _write(self, line: dict[str, Any]) -> None:
        self.log.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

    # Observer

    def connection_opened(self, peer: str) -> None:
        pass

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None:
        pass

    def connection_closed(self, peer: str) -> None:
        pass

    def call_finished(self, record: CallRecord) -> None:
        self._write(rpc_line(record))

    # JobEvents

    def job_started(self, job: Job) -> None:
        _started_job.set((job.job_id, job.snapshot().profile.value))

    def spawn_failed(self, error: BaseException) -> None:
        pass

    def job_ended(self, job: Job) -> None:
        snapshot = job.snapshot()
        usage = snapshot.usage
        line: dict[str, Any] = {
            "time": _now(),
            "event": "job_ended",
            "job_id": job.job_id,
            "owner_sans": sorted(job.owner.sans),
            "profile": snapshot.profile.value,
            "state": snapshot.state.value,
            "exit_code": snapshot.exit_code,
            "signal": snapshot.signal_name,
            "oom_killed": usage.oom_kills > 0,
            "cpu_seconds": round(usage.user_time + usage.system_time, 6),
            "memory_peak_bytes": usage.memory_peak,
            "output": {
                "stdout_bytes": job.journal.stream_bytes[Stream.STDOUT],
                "stderr_bytes": job.journal.stream_bytes[Stream.STDERR],
                "dropped_bytes": snapshot.output.dropped_bytes,
                "journal": str(job.journal.path),
                "journal_bytes": job.journal.size,
                "journal_sha256": None,
            },
        }
        try:
            fd = os.open(job.journal.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            line["output"]["journal_error"] = error.strerror or str(error)
            self._write(line)
            return
        try:
            self._ended_send.send_nowait((line, fd))
        except trio.ClosedResourceError:  # (the daemon is past its shutdown)
            os.close(fd)
            self._write(line)
            return
        self._pending += 1

    async def flushed(self) -> None:
        """Return once every ended job's line is written."""
        while self._pending:
            await self._idle.park()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[AuditTrail]:
        """Host the task that hashes journals and writes job-end lines. On
        exit, the lines of jobs that ended before are written (at most
        ``DRAIN_TIMEOUT`` seconds), then the log is closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hash_ended)
            try:
                yield self
            finally:
                self._ended_send.close()
                with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
                    await self.flushed()
                self._worker_scope.cancel()
        self.log.close()

    async def _hash_ended(self) -> None:
        with self._worker_scope:
            await self._hash_each()

    async def _hash_each(self) -> None:
        async for line, fd in self._ended_receive:
            output = line["output"]
            output["journal_sha256"] = await trio.to_thread.run_sync(
                journal_sha256, fd, output["journal_bytes"]
            )
            self._write(line)
            self._pending -= 1
            self._idle.unpark_all()

    def check_writable(self) -> None:
        """For ``--audit-required``: raise ``Unavailable`` while the log
        cannot be written."""
        if self.required and not self.log.writable:
            raise Unavailable(
                f"the audit log cannot be written ({self.log.error}) and this daemon "
                "serves no unaudited request (--audit-required); try again later"
            )


class AuditCollector(Collector):
    """The audit log's health, for the metrics."""

    def __init__(self, audit_log: AuditLog) -> None:
        self._log = audit_log

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "rund_audit_records", "Audit records written", value=self._log.records
        )
        yield CounterMetricFamily(
            "rund_audit_records_lost",
            "Audit records that could not be written (disk full, read-only, gone)",
            value=self._log.lost,
        )
        yield GaugeMetricFamily(
            "rund_audit_log_writable",
            "1 while the audit log can be written, 0 since its last write failed",
            value=int(self._log.writable),
        )

"""The daemon's Prometheus metrics.

Most figures are read from the daemon's own state at scrape time (jobs by
state, output, disk, CPU and memory, Log subscribers, open connections) by
one collector, so nothing is counted twice and nothing can drift; only events
that leave no state behind (RPCs, handshakes, spawn failures, ended jobs) are
counted as they happen, by the gRPC layer's ``Observer`` calls and the
supervisor's ``JobEvents``.

Cardinality is bounded: RPC labels are the methods the daemon serves (any
other path is ``unknown``) and the gRPC code names; per-job series exist for
at most ``max_job_series`` running jobs (the longest running first), beside
aggregates over every job.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from rund_trio.jobs.state import JobState
from rund_trio.logs.journal import Stream
from rund_trio.server.calls import CallRecord, HandshakeOutcome

if TYPE_CHECKING:
    from rund_trio.jobs.supervisor import Job

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
"""Seconds; Log streams that follow a job for longer land in +Inf."""

DEFAULT_MAX_JOB_SERIES = 20


class Sources(Protocol):
    """What the collector reads at scrape time."""

    @property
    def jobs(self) -> Iterable[Job]:
        """The jobs held in memory: those running, and those whose end is being recorded."""
        ...

    def retained(self) -> tuple[Mapping[JobState, int], int]:
        """Ended jobs kept in the database, by state, and the bytes of their output files."""
        ...

    @property
    def log_subscribers(self) -> int: ...

    @property
    def serving(self) -> bool: ...


@dataclass
class _Ended:
    """Totals of jobs that ended (their figures no longer change)."""

    output: Tally[Stream]
    cpu_seconds: float = 0.0
    oom_killed: int = 0


class DaemonMetrics:
    """The registry of one daemon's metrics, fed as an ``Observer`` and as
    ``JobEvents``. Every method is synchronous and cheap (no I/O)."""

    def __init__(
        self,
        *,
        max_job_series: int = DEFAULT_MAX_JOB_SERIES,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._methods: frozenset[str] = frozenset()
        self._max_job_series = max_job_series
        self._sources: Sources | None = None
        self._connections_open = 0
        self._ended = _Ended(Tally())
        self._extra: list[Collector] = []
        registry = self.registry
        self._rpcs = Counter(
            "rund_rpcs",
            "gRPC calls finished, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self._rpc_seconds = Histogram(
            "rund_rpc_duration_seconds",
            "Time from a call's headers to its status, by method",
            ["grpc_service", "grpc_method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._connections = Counter(
            "rund_connections", "TCP connections accepted", registry=registry
        )
        self._handshakes = Counter(
            "rund_tls_handshakes",
            "TLS handshakes by outcome (ok, refused, timed_out, shed)",
            ["outcome"],
            registry=registry,
        )
        for outcome in HandshakeOutcome:
            self._handshakes.labels(outcome.value)
        self._spawn_failures = Counter(
            "rund_job_spawn_failures",
            "Jobs whose process could not be started",
            registry=registry,
        )
        self._jobs_started = Counter("rund_jobs_started", "Jobs started", registry=registry)
        self._jobs_ended = Counter(
            "rund_jobs_ended", "Jobs ended, by final state", ["state"], registry=registry
        )
        for state in JobState:
            if state is not JobState.RUNNING:
                self._jobs_ended.labels(state.value)
        registry.register(_StateCollector(self))
        if process:
            ProcessCollector(registry=registry)

    def attach(self, sources: Sources, served_methods: Iterable[str]) -> None:
        """Read jobs, subscribers and health from ``sources`` from now on;
        label calls of ``served_methods`` (gRPC paths) by their name."""
        self._sources = sources
        self._methods = frozenset(served_methods)

    def register(self, collector: Collector) -> None:
        """Add a collector of another part of the daemon (the audit trail)."""
        self.registry.register(collector)

    # Observer

    def connection_opened(self, peer: str) -> None:
        self._connections.inc()
        self._connections_open += 1

    def handshake_finished(self, peer: str, outcome: HandshakeOutcome) -> None:
        self._handshakes.labels(outcome.value).inc()

    def connection_closed(self, peer: str) -> None:
        self._connections_open -= 1

    def call_finished(self, record: CallRecord) -> None:
        if record.method in self._methods:
            service, _, method = record.method[1:].partition("/")
        else:
            service = method = "unknown"
        self._rpcs.labels(service, method, record.code).inc()
        self._rpc_seconds.labels(service, method).observe(record.duration)

    # JobEvents

    def job_started(self, job: Job) -> None:
        self._jobs_started.inc()

    def spawn_failed(self, error: BaseException) -> None:
        self._spawn_failures.inc()

    def job_ended(self, job: Job) -> None:
        snapshot = job.snapshot()
        self._jobs_ended.labels(snapshot.state.value).inc()
        self._ended.output.update(job.journal.stream_bytes)
        self._ended.cpu_seconds += snapshot.usage.user_time + snapshot.usage.system_time
        self._ended.oom_killed += snapshot.usage.oom_kills > 0

    def _collect(self) -> Iterator[Metric]:
        sources = self._sources
        jobs = list(sources.jobs) if sources is not None else []
        ended_by_state, ended_bytes = sources.retained() if sources is not None else ({}, 0)
        running = [job for job in jobs if job.record.running]
        by_state = Tally(job.record.state for job in jobs)
        by_state.update(ended_by_state)
        states = GaugeMetricFamily(
            "rund_jobs", "Jobs the daemon holds (running and retained), by state", labels=["state"]
        )
        for state in JobState:
            states.add_metric([state.value], by_state[state])
        yield states

        output = CounterMetricFamily(
            "rund_job_output_bytes", "Job output recorded, by stream", labels=["stream"]
        )
        live = Tally[Stream]()
        for job in running:
            live.update(job.journal.stream_bytes)
        for stream in Stream:
            output.add_metric([stream.name.lower()], self._ended.output[stream] + live[stream])
        yield output
        yield GaugeMetricFamily(
            "rund_state_disk_bytes",
            "Bytes of job output files held in the state directory",
            value=ended_bytes + sum(job.journal.size for job in jobs),
        )

        snapshots = [(job, job.snapshot()) for job in running]
        cpu = sum(s.usage.user_time + s.usage.system_time for _job, s in snapshots)
        yield CounterMetricFamily(
            "rund_jobs_cpu_seconds",
            "CPU time of all jobs, ended and running",
            value=self._ended.cpu_seconds + cpu,
        )
        yield GaugeMetricFamily(
            "rund_jobs_memory_bytes",
            "Memory in use by all running jobs",
            value=sum(s.usage.memory_current for _job, s in snapshots),
        )
        yield CounterMetricFamily(
            "rund_jobs_oom_killed",
            "Jobs that ended with a process killed by the OOM killer",
            value=self._ended.oom_killed,
        )
        job_cpu = CounterMetricFamily(
            "rund_job_cpu_seconds",
            f"CPU time of each running job (at most {self._max_job_series}, longest running first)",
            labels=["job_id"],
        )
        job_memory = GaugeMetricFamily(
            "rund_job_memory_bytes",
            f"Memory in use by each running job (at most {self._max_job_series})",
            labels=["job_id"],
        )
        oldest = sorted(snapshots, key=lambda pair: pair[1].started_at)[: self._max_job_series]
        for job, snapshot in oldest:
            usage = snapshot.usage
            job_cpu.add_metric([job.job_id], usage.user_time + usage.system_time)
            job_memory.add_metric([job.job_id], usage.memory_current)
        yield job_cpu
        yield job_memory

        yield GaugeMetricFamily(
            "rund_log_subscribers",
            "Log streams open",
            value=sources.log_subscribers if sources is not None else 0,
        )
        yield GaugeMetricFamily(
            "rund_connections_open", "Connections open", value=self._connections_open
        )
        yield GaugeMetricFamily(
            "rund_serving",
            "1 while the health service reports SERVING, else 0",
            value=int(sources.serving) if sources is not None else 0,
        )


class _StateCollector(Collector):
    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._collect()

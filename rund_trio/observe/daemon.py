"""Metrics and the audit trail, set up for one daemon: what ``serve`` opens
before it serves, hands to the gRPC layer and the supervisor, and runs beside
them."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio.abc
import trio

from rund_trio.api.grpc_health.v1 import health_pb2
from rund_trio.errors import ConfigError
from rund_trio.jobs.events import JobEvents
from rund_trio.jobs.state import JobState
from rund_trio.jobs.supervisor import Job, Supervisor
from rund_trio.observe.audit import AuditCollector, AuditTrail
from rund_trio.observe.audit_log import AuditLog
from rund_trio.observe.config import ObserveConfig
from rund_trio.observe.fanout import Fanout
from rund_trio.observe.gate import gated
from rund_trio.observe.metrics import DaemonMetrics
from rund_trio.observe.metrics_http import MetricsServer, open_metrics_listener
from rund_trio.rpc import Service
from rund_trio.server.calls import Observer
from rund_trio.server.health import HealthService
from rund_trio.server.service import JobControllerService
from rund_trio.tls.context import TlsFiles

JOB_SERVICE = "rund.JobController"


@dataclass
class DaemonState:
    """What the metrics read at scrape time."""

    supervisor: Supervisor
    service: JobControllerService
    health: HealthService

    @property
    def jobs(self) -> Iterable[Job]:
        return self.supervisor.jobs.values()

    def retained(self) -> tuple[Mapping[JobState, int], int]:
        store = self.supervisor.store
        return store.ended_by_state(), store.totals()[1]

    @property
    def log_subscribers(self) -> int:
        return self.service.log_subscribers

    @property
    def serving(self) -> bool:
        return self.health.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Observability:
    """The metrics and audit trail of one daemon (each None when off), as
    ``observability`` opened them."""

    config: ObserveConfig
    metrics: DaemonMetrics | None = None
    audit: AuditTrail | None = None
    _metrics_listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
    _ssl_context: ssl.SSLContext | None = None
    _parts: list[DaemonMetrics | AuditTrail] = field(default_factory=list)

    @property
    def metrics_addresses(self) -> list[tuple[str, int]]:
        """Where metrics are served (none when they are not)."""
        if self._metrics_listener is None:
            return []
        listeners = getattr(self._metrics_listener, "listeners", [self._metrics_listener])
        return [
            (str(address[0]), int(address[1]))
            for address in (one.extra(anyio.abc.SocketAttribute.local_address) for one in listeners)
        ]

    @property
    def observer(self) -> Observer:
        """For the gRPC layer."""
        return Fanout(self._parts, [])

    @property
    def events(self) -> JobEvents:
        """For the supervisor."""
        return Fanout([], self._parts)

    def guard(self, services: list[Service]) -> list[Service]:
        """``services``, with the job service refusing calls while a required
        audit log cannot be written."""
        audit = self.audit
        if audit is None or not audit.required:
            return services
        return [
            gated(service, audit.check_writable) if service.name == JOB_SERVICE else service
            for service in services
        ]

    def start(self, nursery: trio.Nursery, state: DaemonState, services: list[Service]) -> None:
        """Serve metrics (if asked) until ``nursery`` is cancelled."""
        if self.metrics is None or self._metrics_listener is None:
            return
        self.metrics.attach(
            state,
            served_methods=[
                f"/{service.name}/{method}" for service in services for method in service.methods
            ],
        )
        server = MetricsServer(self.metrics.registry, self._ssl_context)
        nursery.start_soon(server.serve, self._metrics_listener)


@asynccontextmanager
async def observability(config: ObserveConfig, tls: TlsFiles) -> AsyncIterator[Observability]:
    """Bind the metrics address and open the audit log (``ConfigError`` when
    either cannot be), run the audit trail's task until exit, then close both."""
    ops = Observability(config)
    if config.metrics_tls:
        # The daemon's mutual TLS, speaking HTTP/1.1: the gRPC context offers
        # only h2 by ALPN, which HTTP clients such as Prometheus would then speak.
        ops._ssl_context = tls.server_context()
        ops._ssl_context.set_alpn_protocols(["http/1.1"])
    async with AsyncExitStack() as stack:
        if config.metrics_addr is not None:
            ops._metrics_listener = await open_metrics_listener(config.metrics_addr)
            await stack.enter_async_context(ops._metrics_listener)
            ops.metrics = DaemonMetrics(max_job_series=config.metrics_max_job_series)
            ops._parts.append(ops.metrics)
        if config.audit_log is not None:
            try:
                audit_log = AuditLog(
                    config.audit_log, max_size=config.audit_max_size, keep=config.audit_keep
                )
            except OSError as error:
                raise ConfigError(
                    f"cannot open the audit log {config.audit_log}: {error.strerror or error}"
                ) from None
            ops.audit = await stack.enter_async_context(
                AuditTrail(audit_log, required=config.audit_required).running()
            )
            ops._parts.append(ops.audit)
            if ops.metrics is not None:
                ops.metrics.register(AuditCollector(audit_log))
        yield ops

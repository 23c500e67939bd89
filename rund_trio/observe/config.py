"""What ``serve`` is told about metrics and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from rund_trio.errors import ConfigError
from rund_trio.observe.metrics import DEFAULT_MAX_JOB_SERIES

DEFAULT_AUDIT_MAX_SIZE = 100 * 1024**2
DEFAULT_AUDIT_KEEP = 5


@dataclass(frozen=True)
class ObserveConfig:
    metrics_addr: str | None = None
    """``host:port`` of the metrics endpoint; None: no metrics."""
    metrics_tls: bool = False
    """Serve metrics over the daemon's mutual TLS instead of plain HTTP."""
    metrics_max_job_series: int = DEFAULT_MAX_JOB_SERIES
    """Running jobs that get their own CPU and memory series."""
    audit_log: str | None = None
    """A file to append the audit trail to, ``-`` for standard output; None: none."""
    audit_max_size: int | None = DEFAULT_AUDIT_MAX_SIZE
    """Rotate the audit file before it grows beyond this; None: never."""
    audit_keep: int = DEFAULT_AUDIT_KEEP
    """Rotated audit files kept."""
    audit_required: bool = False
    """Refuse job requests with UNAVAILABLE while the audit log cannot be written."""

    def __post_init__(self) -> None:
        if self.metrics_tls and self.metrics_addr is None:
            raise ConfigError("--metrics-tls needs --metrics-addr HOST:PORT")
        if self.audit_required and self.audit_log is None:
            raise ConfigError("--audit-required needs --audit-log FILE")
        if self.metrics_max_job_series < 0:
            raise ConfigError(
                f"--metrics-max-job-series must be 0 or more, not {self.metrics_max_job_series}"
            )
        if self.audit_keep < 0:
            raise ConfigError(f"--audit-keep must be 0 or more, not {self.audit_keep}")

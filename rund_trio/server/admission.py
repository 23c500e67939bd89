"""Which connections the daemon takes on, as sshd's MaxStartups does.

A connection costs a descriptor and some memory from the moment it is
accepted, and until its TLS handshake ends nobody knows who it is. So:

* at most ``max_handshakes`` connections are in the handshake at once, and at
  most ``max_handshakes_per_source`` from one IP address; a connection beyond
  either is closed at once (*shed*), before any TLS work;
* at most ``max_connections_per_client`` authenticated connections per client
  identity (its certificate's SANs) are open at once; one beyond is closed
  right after its handshake;
* at least ``fd_reserve`` descriptors stay free for what jobs need (pipes,
  pidfds, journal files): with fewer free, new connections are shed.

The transport asks, in this order, with nothing awaited in between::

    ticket = admission.try_begin_handshake(peer_host)   # None: close it now
    ...handshake...
    admission.end_handshake(ticket)                     # whatever the outcome
    lease = admission.try_admit(identity)               # None: close it now
    ...serve the connection...
    admission.release(lease)

All methods are synchronous, never block and never raise; ``end_handshake``
and ``release`` are idempotent. No I/O but the descriptor count, which is
injected (``fds_in_use``) so that tests choose it.
"""

from __future__ import annotations

import enum
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from rund_trio.errors import ConfigError


class Shed(enum.Enum):
    """Why a connection was closed without being served."""

    HANDSHAKES = "too many connections in the TLS handshake (--max-handshakes)"
    SOURCE = "too many handshakes at once from its address (--max-handshakes-per-source)"
    DESCRIPTORS = "too few free file descriptors (--fd-reserve)"
    CLIENT = "too many connections from its client certificate (--max-connections-per-client)"


@dataclass(frozen=True)
class AdmissionLimits:
    """The caps; None (or 0 from the command line) means no cap."""

    max_handshakes: int | None = 256
    max_handshakes_per_source: int | None = 64
    max_connections_per_client: int | None = 256
    fd_reserve: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_handshakes", "max_handshakes_per_source", "max_connections_per_client"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be at least 1 (or 0 for no cap), not {value}")
        if self.fd_reserve < 0:
            raise ConfigError(f"--fd-reserve must be 0 or more, not {self.fd_reserve}")


@dataclass(eq=False)
class HandshakeTicket:
    source: str
    open: bool = True


@dataclass(eq=False)
class ClientLease:
    identity: Hashable
    open: bool = True


class DescriptorBudget:
    """How many descriptors are in use, counted in /proc/self/fd at most once
    per ``interval`` seconds (a flood of accepts does not list the directory
    once per connection; the handshake caps bound what it can take meanwhile)."""

    def __init__(self, *, interval: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._counted_at = -float("inf")
        self._count = 0

    def in_use(self) -> int:
        now = self._clock()
        if now - self._counted_at >= self._interval:
            self._count = len(os.listdir("/proc/self/fd"))
            self._counted_at = now
        return self._count


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE: how many descriptors this process may have."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd and most shells
    start daemons at 1024 soft with a far higher hard limit); (old, new)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return soft, hard
    return soft, soft


MIN_CONNECTION_DESCRIPTORS = 256
"""Descriptors left for connections (and everything else) beside the reserve."""


def fit_fd_reserve(limit: int, reserve: int, *, explicit: bool) -> tuple[int, str | None]:
    """The reserve to keep under a descriptor ``limit``, and a warning when the
    default had to shrink to leave ``MIN_CONNECTION_DESCRIPTORS`` for the rest
    (a limit of 1024, as many shells and VMs have, would otherwise refuse every
    connection). An explicit ``--fd-reserve`` that does not fit is a ConfigError."""
    if not reserve or limit - reserve >= MIN_CONNECTION_DESCRIPTORS:
        return reserve, None
    if explicit:
        raise ConfigError(
            f"--fd-reserve {reserve} leaves fewer than {MIN_CONNECTION_DESCRIPTORS} of this "
            f"process's {limit} file descriptors for connections: lower it, or raise the limit "
            "(ulimit -n, or LimitNOFILE= in the unit)"
        )
    fitted = max(0, min(reserve, limit // 4))
    return fitted, (
        f"the file descriptor limit is only {limit}: keeping {fitted} in reserve for jobs "
        f"instead of {reserve} (raise it with ulimit -n or LimitNOFILE=)"
    )


@dataclass
class Admission:
    """The counts behind the caps, for one daemon. See the module docstring."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    fds_in_use: Callable[[], int] = field(default_factory=lambda: DescriptorBudget().in_use)
    fd_limit: Callable[[], int] = descriptor_limit
    handshakes: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    by_client: Counter[Hashable] = field(default_factory=Counter)
    shed: Counter[Shed] = field(default_factory=Counter)
    """Connections shed so far, by reason."""
    last_shed: Shed | None = None

    def try_begin_handshake(self, source: str) -> HandshakeTicket | None:
        """A ticket for a new connection from IP address ``source`` to do its
        TLS handshake, or None (counted in ``shed``, reason in ``last_shed``)
        if it must be closed at once."""
        limits = self.limits
        reason: Shed | None = None
        if limits.max_handshakes is not None and self.handshakes >= limits.max_handshakes:
            reason = Shed.HANDSHAKES
        elif (
            limits.max_handshakes_per_source is not None
            and self.by_source[source] >= limits.max_handshakes_per_source
        ):
            reason = Shed.SOURCE
        elif limits.fd_reserve and self.fd_limit() - self.fds_in_use() < limits.fd_reserve:
            reason = Shed.DESCRIPTORS
        if reason is not None:
            self.shed[reason] += 1
            self.last_shed = reason
            return None
        self.handshakes += 1
        self.by_source[source] += 1
        return HandshakeTicket(source)

    def end_handshake(self, ticket: HandshakeTicket) -> None:
        """The connection's handshake is over, whatever its outcome."""
        if not ticket.open:
            return
        ticket.open = False
        self.handshakes -= 1
        self.by_source[ticket.source] -= 1
        if not self.by_source[ticket.source]:
            del self.by_source[ticket.source]

    def try_admit(self, identity: Hashable) -> ClientLease | None:
        """A lease for an authenticated connection of client ``identity``, or
        None if that client already has its cap of connections open."""
        cap = self.limits.max_connections_per_client
        if cap is not None and self.by_client[identity] >= cap:
            self.shed[Shed.CLIENT] += 1
            self.last_shed = Shed.CLIENT
            return None
        self.by_client[identity] += 1
        return ClientLease(identity)

    def release(self, lease: ClientLease) -> None:
        """The authenticated connection closed."""
        if not lease.open:
            return
        lease.open = False
        self.by_client[lease.identity] -= 1
        if not self.by_client[lease.identity]:
            del self.by_client[lease.identity]

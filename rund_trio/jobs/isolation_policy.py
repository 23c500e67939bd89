"""The daemon's isolation policy: what a job's request may choose, and how
every job is contained. Pure logic, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rund_trio.errors import ConfigError, FailedPrecondition, PermissionDenied
from rund_trio.isolation.id_range import DEFAULT as DEFAULT_ID_RANGE
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.spec import Isolation, Namespaces


class Network(enum.Enum):
    HOST = "host"
    """The host's network namespace."""
    ISOLATED = "isolated"
    """A new network namespace with only the loopback interface, up."""


@dataclass(frozen=True)
class IsolationRequest:
    """What a Start request asks for; None leaves the choice to the daemon."""

    network: Network | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class IsolationPolicy:
    """How the daemon contains jobs (its flags)."""

    namespaces: bool = True
    """New PID, mount, UTS and IPC namespaces for every job."""
    network: Network = Network.HOST
    """The network of jobs that do not choose one."""
    allow_host_network: bool = True
    rootfs: str | None = None
    """A directory every job pivots into as its /."""
    run_as: tuple[int, int] | None = None
    """(uid, gid) of jobs that do not choose; None: the daemon's own."""
    allowed_uids: frozenset[int] = field(default_factory=frozenset)
    """uids a request may choose (run_as's is always allowed)."""
    allowed_gids: frozenset[int] = field(default_factory=frozenset)
    hidden: tuple[str, ...] = ()
    """Absolute paths no job may read (covered in its mount namespace)."""
    contained: bool = True
    """Jobs are contained (``Isolation.contained``): a user namespace mapped
    to ``id_range``, a read-only host file system, covers they cannot undo.
    False: the host profile, today's powers. Ignored without namespaces (a
    job is then never contained). The job profiles of issue #14 choose this
    per job in ``isolation_for``."""
    id_range: IdRange = DEFAULT_ID_RANGE
    """The host ids contained jobs' ids 0..count-1 map to."""

    def validate(self) -> None:
        """``ConfigError`` for settings that contradict each other."""
        if not self.namespaces and self.network is Network.ISOLATED:
            raise ConfigError("an isolated network needs namespaces (drop --no-namespaces)")
        if not self.namespaces and self.rootfs is not None:
            raise ConfigError("--rootfs needs namespaces (drop --no-namespaces)")
        if not self.allow_host_network and self.network is Network.HOST:
            raise ConfigError("--forbid-host-network needs --network isolated")
        if not self.namespaces and self.hidden:
            raise ConfigError("--hide needs namespaces (drop --no-namespaces)")
        if self.namespaces and self.contained:
            self.id_range.validate()
            last = self.id_range.count - 1
            ids = [("--run-as", i) for i in self.run_as or ()]
            ids += [("--allow-uid", i) for i in self.allowed_uids]
            ids += [("--allow-gid", i) for i in self.allowed_gids]
            for flag, value in ids:
                if value > last:
                    raise ConfigError(
                        f"{flag} {value} is outside contained jobs' user namespace "
                        f"(ids 0 to {last}; see --userns-range)"
                    )

    def isolation_for(self, request: IsolationRequest) -> Isolation:
        """The containment of one job; raises ``FailedPrecondition`` for a
        choice this daemon cannot honour and ``PermissionDenied`` for a user it
        does not allow."""
        network = request.network or self.network
        if network is Network.HOST and not self.allow_host_network:
            raise FailedPrecondition("this daemon does not let jobs use the host network")
        if network is Network.ISOLATED and not self.namespaces:
            raise FailedPrecondition(
                "this daemon runs jobs without namespaces, so it cannot isolate their network"
            )
        uid, gid = self._credentials(request)
        if not self.namespaces:
            return Isolation(namespaces=Namespaces.none(), uid=uid, gid=gid, contained=False)
        return Isolation(
            namespaces=Namespaces(net=network is Network.ISOLATED),
            rootfs=self.rootfs,
            uid=uid,
            gid=gid,
            hidden=self.hidden,
            contained=self.contained,
            id_range=self.id_range,
        )

    def _credentials(self, request: IsolationRequest) -> tuple[int | None, int | None]:
        """(uid, gid) of the job; None keeps the daemon's own. A gid not asked
        for follows the uid asked for, as a login would."""
        default_uid, default_gid = self.run_as if self.run_as else (None, None)
        if request.uid is None and request.gid is None:
            return default_uid, default_gid
        uid = default_uid if request.uid is None else request.uid
        if request.gid is not None:
            gid: int | None = request.gid
        else:
            gid = default_gid if request.uid is None else request.uid
        if uid != default_uid:
            self._allow("uid", uid, self.allowed_uids)
        if gid != default_gid:
            self._allow("gid", gid, self.allowed_gids)
        return uid, gid

    @staticmethod
    def _allow(what: str, value: int | None, allowed: frozenset[int]) -> None:
        if value not in allowed:
            choices = ", ".join(str(v) for v in sorted(allowed)) or "none"
            raise PermissionDenied(
                f"this daemon does not let jobs run as {what} {value} (allowed: {choices})"
            )

"""The daemon's isolation policy: what a job's request may choose, and how
every job is contained. Pure logic, no I/O."""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable
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


class Profile(enum.Enum):
    """What a job may do to the machine it runs on."""

    CONTAINED = "contained"
    """``Isolation.contained``: a user namespace mapped to an unprivileged id
    range, the host's file system read-only with private /tmp and /dev, masked
    /proc, its own cgroup namespace and covers it cannot undo
    (``rund_trio.isolation.container_fs``, ``.userns``); then capabilities no
    wider than Docker's default, ``no_new_privs`` and a seccomp filter
    (``rund_trio.isolation.capabilities``, ``.seccomp``). Needs namespaces."""
    HOST = "host"
    """The daemon's own powers: for jobs that administer the machine, and only
    for the identities the operator grants them to."""


_SAN_KINDS = {"dns": "DNS", "ip": "IP", "email": "email", "uri": "URI"}


def parse_san_pattern(text: str) -> str:
    """A ``--allow-host-jobs`` pattern in its canonical form: ``KIND:GLOB``,
    ``KIND`` one of DNS, IP, email, URI (any case) as Identity SANs are
    written, ``GLOB`` an ``fnmatch`` pattern (``*``, ``?``, ``[...]``; ``*``
    also matches dots) over the SAN's value, matched case-sensitively except
    that a DNS pattern is lower-cased as DNS SANs are. ``ConfigError`` with a
    one-line reason for anything else."""
    kind, colon, value = text.strip().partition(":")
    canonical = _SAN_KINDS.get(kind.strip().lower())
    if not colon or canonical is None:
        raise ConfigError(
            f"--allow-host-jobs {text!r}: write KIND:PATTERN with KIND one of DNS, IP, "
            "email, URI (e.g. DNS:*.ops.example.com); to trust every client use "
            "--default-profile host"
        )
    value = value.strip()
    if not value:
        raise ConfigError(f"--allow-host-jobs {text!r}: the pattern after {kind}: is empty")
    if canonical == "DNS":
        value = value.lower().rstrip(".")
    return f"{canonical}:{value}"


def san_matches(pattern: str, sans: Iterable[str]) -> bool:
    """Whether one of ``sans`` (canonical ``KIND:value``) matches ``pattern``
    (from ``parse_san_pattern``): the same kind, the value by ``fnmatch``."""
    kind, _, glob = pattern.partition(":")
    for san in sans:
        san_kind, _, value = san.partition(":")
        if san_kind == kind and fnmatch.fnmatchcase(value, glob):
            return True
    return False


@dataclass(frozen=True)
class IsolationRequest:
    """What a Start request asks for; None leaves the choice to the daemon."""

    network: Network | None = None
    uid: int | None = None
    gid: int | None = None
    profile: Profile | None = None


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
    default_profile: Profile = Profile.CONTAINED
    """The profile of jobs that do not ask for one (``--default-profile``)."""
    host_job_grants: tuple[str, ...] = ()
    """SAN patterns (``parse_san_pattern``) of the clients that may ask for
    host jobs (``--allow-host-jobs``)."""
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
        if not self.namespaces and self.default_profile is Profile.CONTAINED:
            raise ConfigError(
                "--no-namespaces cannot contain jobs (a contained job needs its own user, "
                "PID and mount namespaces): add --default-profile host, or drop --no-namespaces"
            )
        if self.namespaces and self.default_profile is Profile.CONTAINED:
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

    def profile_for(self, request: IsolationRequest, sans: Iterable[str]) -> Profile:
        """The profile of a job asked for by a client with ``sans``: the one it
        asks for, else the daemon's default. Asking for ``HOST`` needs a grant
        (a SAN matching a ``host_job_grants`` pattern) unless host is the
        default anyway; otherwise ``PermissionDenied``."""
        wanted = request.profile or self.default_profile
        if (
            request.profile is Profile.HOST
            and self.default_profile is not Profile.HOST
            and not any(san_matches(pattern, sans) for pattern in self.host_job_grants)
        ):
            raise PermissionDenied(
                "this daemon does not let your certificate run host jobs: run the job "
                "without --host (contained), or ask the operator for a grant "
                "(serve --allow-host-jobs matching one of your certificate's names)"
            )
        return wanted

    def isolation_for(self, request: IsolationRequest, sans: Iterable[str] = ()) -> Isolation:
        """The containment of one job asked for by a client with ``sans``;
        raises ``FailedPrecondition`` for a choice this daemon cannot honour
        and ``PermissionDenied`` for a user or a profile it does not allow."""
        contained = self.profile_for(request, sans) is Profile.CONTAINED
        network = request.network or self.network
        if network is Network.HOST and not self.allow_host_network:
            raise FailedPrecondition("this daemon does not let jobs use the host network")
        if network is Network.ISOLATED and not self.namespaces:
            raise FailedPrecondition(
                "this daemon runs jobs without namespaces, so it cannot isolate their network"
            )
        uid, gid = self._credentials(request)
        if not self.namespaces:
            if contained:
                raise FailedPrecondition(
                    "this daemon runs jobs without namespaces (--no-namespaces), so it cannot "
                    "contain them: ask without the contained profile (its jobs are host jobs)"
                )
            return Isolation(namespaces=Namespaces.none(), uid=uid, gid=gid, contained=False)
        return Isolation(
            namespaces=Namespaces(net=network is Network.ISOLATED),
            rootfs=self.rootfs,
            uid=uid,
            gid=gid,
            hidden=self.hidden,
            contained=contained,
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

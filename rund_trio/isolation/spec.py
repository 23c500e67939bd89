"""What a job's isolation is: the daemon-side model of the helper's spec.

``Isolation`` is the per-job policy (namespaces, host name, root filesystem,
credentials, cgroup); ``IsolationSpec`` adds the program (argv, env, cwd) and is
what travels to the ``execute`` helper (``to_bytes``/``from_bytes``, format in
``rund_trio.isolation.wire``). ``validate`` rejects combinations the helper
cannot honour before any process is started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from rund_trio.errors import InvalidRequest, Unsupported
from rund_trio.isolation import wire
from rund_trio.isolation.id_range import DEFAULT as DEFAULT_ID_RANGE
from rund_trio.isolation.id_range import IdRange

MAX_ID = 2**32 - 2
"""The largest uid/gid (2**32 - 1 is the kernel's "no id")."""
HOSTNAME_MAX = 64
"""The kernel's limit on a host name (HOST_NAME_MAX)."""


@dataclass(frozen=True)
class Namespaces:
    """Which new namespaces a job gets. A ``pid`` namespace needs a ``mount``
    one (its own /proc); ``net`` means an isolated network with only ``lo``."""

    pid: bool = True
    mount: bool = True
    uts: bool = True
    ipc: bool = True
    net: bool = False

    @classmethod
    def none(cls) -> Namespaces:
        """The host's namespaces for everything."""
        return cls(pid=False, mount=False, uts=False, ipc=False, net=False)


@dataclass(frozen=True)
class Isolation:
    """How one job is contained.

    ``hostname`` needs a ``uts`` namespace, ``rootfs`` (an absolute directory
    the job sees as ``/``) a ``mount`` one. ``uid``/``gid`` are applied as
    given (the allowlist is the daemon's business); ``gid`` defaults to ``uid``
    when only ``uid`` is set, never to root's group. ``cgroup_dir`` is the
    job's cgroup v2 leaf, joined before anything else. ``hidden`` are absolute
    paths the job must not read (the daemon's state directory, its TLS key):
    in the job's mount namespace, before anything else is mounted, a directory
    is covered by an empty read-only tmpfs and a file by ``/dev/null``.

    ``contained`` (the default; needs PID and mount namespaces) puts the job in
    a user namespace mapped to ``id_range``, so ``uid``/``gid`` are ids of that
    namespace, below ``id_range.count``; it sees the host's root (or
    ``rootfs``) read-only, with a private /tmp, a minimal /dev, masked /proc
    and its own cgroup namespace, and the covers cannot be undone
    (``rund_trio.isolation.container_fs``); then, in the job's process, its
    capabilities are narrowed, and ``no_new_privs`` and a seccomp filter set
    last before the exec (``capabilities``, ``seccomp``). Both layers travel
    as the spec's one ``contained`` record, so neither comes without the
    other. Not contained (the host profile, ``none()``): today's powers,
    uid/gid the host's.
    """

    namespaces: Namespaces = field(default_factory=Namespaces)
    hostname: str | None = None
    rootfs: str | None = None
    uid: int | None = None
    gid: int | None = None
    cgroup_dir: str | None = None
    hidden: tuple[str, ...] = ()
    contained: bool = True
    id_range: IdRange = DEFAULT_ID_RANGE

    @classmethod
    def none(cls) -> Isolation:
        """No new namespaces, no root filesystem, the daemon's credentials."""
        return cls(namespaces=Namespaces.none(), contained=False)

    def validate(self) -> None:
        """Raise ``InvalidRequest`` for a combination the helper cannot apply."""
        ns = self.namespaces
        if ns.pid and not ns.mount:
            raise InvalidRequest("a PID namespace needs a mount namespace (for its own /proc)")
        if self.hostname is not None:
            if not ns.uts:
                raise InvalidRequest("setting a host name needs a UTS namespace")
            _check_hostname(self.hostname)
        if self.rootfs is not None:
            if not ns.mount:
                raise InvalidRequest("a root filesystem needs a mount namespace")
            _check_path("rootfs", self.rootfs)
            if not os.path.isabs(self.rootfs) or not self.rootfs.strip("/"):
                raise InvalidRequest("rootfs must be an absolute path other than /")
        if self.hidden and not ns.mount:
            raise InvalidRequest("hiding paths from a job needs a mount namespace")
        for path in self.hidden:
            _check_path("hidden path", path)
            if not os.path.isabs(path) or not path.strip("/"):
                raise InvalidRequest(f"hidden path {path!r} must be absolute and not /")
        if self.cgroup_dir is not None:
            _check_path("cgroup_dir", self.cgroup_dir)
            if not os.path.isabs(self.cgroup_dir):
                raise InvalidRequest("cgroup_dir must be an absolute path")
        for name, value in (("uid", self.uid), ("gid", self.gid)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID
            ):
                raise InvalidRequest(f"{name} must be an integer from 0 to {MAX_ID}")
        if self.contained:
            if not (ns.pid and ns.mount):
                raise InvalidRequest("a contained job needs PID and mount namespaces")
            last = self.id_range.count - 1
            for name, value in (("uid", self.uid), ("gid", self.gid)):
                if value is not None and value > last:
                    raise InvalidRequest(
                        f"{name} {value} is outside a contained job's user namespace "
                        f"(its ids are 0 to {last})"
                    )


@dataclass(frozen=True)
class IsolationSpec:
    """One job's process as the ``execute`` helper receives it."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cwd: str | None = None
    isolation: Isolation = field(default_factory=Isolation)

    def validate(self) -> None:
        """Raise ``InvalidRequest`` unless the helper can run this spec."""
        if not self.argv or not self.argv[0]:
            raise InvalidRequest("argv must name a program")
        for arg in self.argv:
            _check_str("argument", arg)
        for key, value in self.env.items():
            _check_str("environment variable name", key)
            _check_str("environment variable value", value)
            if not key or "=" in key:
                raise InvalidRequest(f"bad environment variable name {key!r}")
        if self.cwd is not None:
            _check_path("cwd", self.cwd)
            if self.isolation.rootfs is not None and not os.path.isabs(self.cwd):
                raise InvalidRequest("with a root filesystem, cwd must be absolute")
            if self.isolation.contained and not os.path.isabs(self.cwd):
                raise InvalidRequest("for a contained job, cwd must be absolute")
        self.isolation.validate()

    def to_record(self) -> dict[str, object]:
        """The plain record of the wire format (``rund_trio.isolation.wire``)."""
        iso = self.isolation
        ns = iso.namespaces
        gid = iso.gid if iso.gid is not None else iso.uid
        return {
            "argv": list(self.argv),
            "env": dict(self.env),
            "cwd": self.cwd,
            "cgroup_dir": iso.cgroup_dir,
            "namespaces": {
                "pid": ns.pid,
                "mount": ns.mount,
                "uts": ns.uts,
                "ipc": ns.ipc,
                "net": ns.net,
            },
            "hostname": iso.hostname,
            "rootfs": iso.rootfs,
            "hidden": list(iso.hidden),
            "uid": iso.uid,
            "gid": gid,
            "contained": containment(iso) if iso.contained else None,
        }

    def to_bytes(self) -> bytes:
        """Validate, then encode for the helper's spec fd."""
        self.validate()
        return wire.encode_spec(self.to_record())

    @classmethod
    def from_bytes(cls, data: bytes) -> IsolationSpec:
        """Decode and validate the spec fd's bytes; ``InvalidRequest`` if bad."""
        try:
            record = wire.decode_spec(data)
        except wire.WireError as error:
            raise InvalidRequest(str(error)) from None
        ns = record["namespaces"]
        assert isinstance(ns, dict)
        contained = record["contained"]
        id_range = IdRange(*contained["ids"]) if isinstance(contained, dict) else DEFAULT_ID_RANGE
        spec = cls(
            argv=tuple(record["argv"]),  # type: ignore[arg-type]
            env=MappingProxyType(dict(record["env"])),  # type: ignore[call-overload]
            cwd=record["cwd"],  # type: ignore[arg-type]
            isolation=Isolation(
                namespaces=Namespaces(**ns),
                hostname=record["hostname"],  # type: ignore[arg-type]
                rootfs=record["rootfs"],  # type: ignore[arg-type]
                hidden=tuple(record["hidden"]),  # type: ignore[arg-type]
                uid=record["uid"],  # type: ignore[arg-type]
                gid=record["gid"],  # type: ignore[arg-type]
                cgroup_dir=record["cgroup_dir"],  # type: ignore[arg-type]
                contained=contained is not None,
                id_range=id_range,
            ),
        )
        spec.validate()
        return spec


def containment(iso: Isolation) -> dict[str, object]:
    """The spec's ``contained`` record of a contained job: its user
    namespace's host id range (``userns``), the capabilities it keeps
    (NET_BIND_SERVICE only with a network of its own) and its seccomp filter
    (tracing allowed only inside a PID namespace of its own). Raises
    ``Unsupported`` when this host cannot build the filter: a contained job
    is refused rather than run weaker."""
    from rund_trio.isolation import capabilities, seccomp

    try:
        bpf = seccomp.program(allow_tracing=iso.namespaces.pid)
    except seccomp.FilterUnavailable as error:
        raise Unsupported(
            f"this host cannot confine contained jobs with seccomp: {error}; "
            "contained jobs are refused until it can"
        ) from None
    ids = iso.id_range
    return {
        "ids": [ids.uid_start, ids.gid_start, ids.count],
        "caps": capabilities.contained_set(own_network=iso.namespaces.net),
        "seccomp": bpf,
    }


def hostname_for_job(job_id: str) -> str:
    """``rund-`` and the first 12 characters of the job's ULID, lower-cased
    (48 bits of timestamp plus 12 of randomness: unique enough to tell jobs
    apart in a shell prompt)."""
    return "rund-" + job_id[:12].lower()


def _check_str(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    if "\0" in value:
        raise InvalidRequest(f"{what} {value!r} contains a NUL byte")


def _check_path(what: str, value: str) -> None:
    _check_str(what, value)
    if not value:
        raise InvalidRequest(f"{what} must not be empty")


def _check_hostname(name: str) -> None:
    _check_str("hostname", name)
    raw = name.encode("utf-8", "surrogateescape")
    if not 1 <= len(raw) <= HOSTNAME_MAX:
        raise InvalidRequest(f"hostname must be 1 to {HOSTNAME_MAX} bytes")
    allowed = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
    if not set(raw) <= allowed or raw.startswith((b"-", b".")):
        raise InvalidRequest(f"hostname {name!r} is not a valid host name")

"""The daemon process: one nursery owning the gRPC server and the supervisor."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from rund_trio.address import parse_address
from rund_trio.cgroups.discovery import read_location
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError
from rund_trio.isolation.spec import Isolation
from rund_trio.jobs.isolation_policy import IsolationPolicy
from rund_trio.jobs.spec import MAX_ARGV_BYTES, MAX_ENV_BYTES
from rund_trio.jobs.store import JobStore, Offload
from rund_trio.jobs.supervisor import KILL_TIMEOUT, Supervisor, SupervisorConfig
from rund_trio.logs.budget import Reserve
from rund_trio.logs.state_dir import check_state_directory, state_directory
from rund_trio.observe.config import ObserveConfig
from rund_trio.observe.daemon import DaemonState, Observability, observability
from rund_trio.observe.fanout import Fanout
from rund_trio.process.base import Spawner
from rund_trio.process.cgrouped import CgroupSpawner
from rund_trio.process.forkserver import ForkServerSpawner
from rund_trio.rpc import GrpcServer, TransportConfig
from rund_trio.server.admission import (
    Admission,
    AdmissionLimits,
    descriptor_limit,
    fit_fd_reserve,
)
from rund_trio.server.calls import Observer
from rund_trio.server.health import HealthService
from rund_trio.server.host_support import Requested, check_host_support
from rund_trio.server.reflection import Reflection
from rund_trio.server.service import JobControllerService
from rund_trio.tls.context import TlsFiles

log = logging.getLogger(__name__)

SHUTDOWN_GOODBYE = 1.0
"""Seconds connections have at shutdown to take their GOAWAY and close
(``GrpcServer.shut_down``) before they are closed anyway."""


@dataclass(frozen=True)
class ServeConfig:
    tls: TlsFiles
    addr: str = ":8000"
    state_dir: Path | None = None
    """None: a fresh private directory under the system temp directory,
    removed at exit (the CLI's default is a persistent one, see
    ``logs.state_dir.default_state_dir``)."""
    retain_jobs: int | None = 10_000
    """Most ended jobs kept; None: no limit."""
    retain_for: float | None = 7 * 24 * 3600.0
    """Seconds an ended job is kept; None: no limit."""
    output_cap: int | None = 1024**3
    max_output_total: int | None = 10 * 1024**3
    min_free_disk: Reserve = field(default_factory=Reserve)
    """Default: 1 GiB or 5% of the state directory's filesystem, whichever is smaller."""
    output_linger: float = 2.0
    shutdown_grace: float = 0.0
    transport: TransportConfig = field(default_factory=TransportConfig)
    cgroups: CgroupOptions | None = field(default_factory=CgroupOptions)
    """None: do not use cgroups at all (every limit is then refused)."""
    isolation: IsolationPolicy = field(default_factory=IsolationPolicy)
    """How jobs are contained: by default new PID, mount, UTS and IPC namespaces."""
    max_running_jobs: int | None = 4096
    max_running_jobs_per_client: int | None = 1024
    max_log_streams_per_client: int | None = 256
    max_argv_bytes: int | None = MAX_ARGV_BYTES
    """Bytes of a job's command line (arguments and their NULs); None: no cap."""
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    """Metrics and the audit trail (both off by default)."""
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Caps on connections in the TLS handshake and per client."""
    listen_sockets: tuple[socket.socket, ...] = ()
    """Listening sockets to serve on instead of binding ``addr`` (systemd
    socket activation)."""
    max_env_bytes: int | None = MAX_ENV_BYTES
    """Bytes of the environment a Start request adds (entries and their NULs); None: no cap."""
    requested: Requested = field(default_factory=Requested)
    """Options the operator gave explicitly: start-up fails if the host cannot
    honour one of them (``host_support``)."""


@dataclass(frozen=True)
class RunningDaemon:
    """What ``serve`` hands its caller once it accepts connections."""

    addresses: list[tuple[str, int]]
    supervisor: Supervisor
    server: GrpcServer
    state_dir: Path
    health: HealthService
    observability: Observability


def check_config(config: ServeConfig) -> ssl.SSLContext:
    """Everything about ``config`` that can be checked without a side effect
    (the certificate files, the address, the isolation settings, the paths to
    hide, the cgroup root's place): ``ConfigError`` for the first problem.
    Returns the server's TLS context. Called before anything is bound,
    claimed, killed or created."""
    ssl_context = config.tls.server_context()
    if not config.listen_sockets:
        parse_address(config.addr, default_host=None)
    config.isolation.validate()
    if config.isolation.namespaces:
        for path in config.isolation.hidden:
            if not os.path.lexists(path):
                raise ConfigError(
                    f"cannot hide {path} from jobs: No such file or directory (--hide)"
                )
    if config.state_dir is not None:
        check_state_directory(config.state_dir)
    if config.cgroups is not None and config.cgroups.root is not None:
        location = read_location()
        mount = location.mount.mount_point if location is not None else None
        root = Path(os.path.normpath(config.cgroups.root))
        if mount is not None and root != mount and mount not in root.parents:
            raise ConfigError(
                f"--cgroup-root {config.cgroups.root} is not inside the cgroup2 mount {mount}"
            )
    return ssl_context


def activated_listeners(sockets: Sequence[socket.socket]) -> list[trio.SocketListener]:
    """Listeners on sockets systemd passed (already bound and listening)."""
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


async def open_listeners(addr: str) -> list[trio.SocketListener]:
    """TCP listeners on ``addr`` (every interface, IPv4 and IPv6, without a host)."""
    host, port = parse_address(addr, default_host=None)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as error:
        raise ConfigError(f"cannot listen on {addr}: {error.strerror or error}") from None


def listening_addresses(listeners: Sequence[trio.abc.Listener[Any]]) -> list[tuple[str, int]]:
    """The (host, port) each socket listener is bound to."""
    addresses = []
    for listener in listeners:
        if isinstance(listener, trio.SocketListener):
            host, port = listener.socket.getsockname()[:2]
            addresses.append((str(host), int(port)))
    return addresses


def hide_daemon_files(policy: IsolationPolicy, state_dir: Path, key: Path) -> IsolationPolicy:
    """``policy`` with the state directory (other jobs' output), the server's
    private key and every ``--hide`` path hidden from jobs, by their real
    paths: a mount covers what a symlink points to, and that is what must not
    be read. A ``--hide`` path that does not exist is a ConfigError. Without
    namespaces nothing can be hidden: say so."""
    if not policy.namespaces:
        log.warning(
            "jobs run in the daemon's mount namespace (--no-namespaces): "
            "a job running as root can read %s and %s",
            state_dir,
            key,
        )
        return policy
    for path in policy.hidden:
        if not os.path.lexists(path):
            raise ConfigError(f"cannot hide {path} from jobs: No such file or directory (--hide)")
    hidden = (os.path.realpath(state_dir), os.path.realpath(key), *policy.hidden)
    return replace(policy, hidden=tuple(dict.fromkeys(os.path.realpath(h) for h in hidden)))


def warn_if_jobs_cannot_be_contained() -> None:
    """Build the contained profile's seccomp filter once at start-up, so an
    operator learns at once, not at the first Start, that contained jobs will
    be refused (each Start of one says why again)."""
    from rund_trio.isolation import seccomp

    try:
        seccomp.program(allow_tracing=True)
    except seccomp.FilterUnavailable as error:
        log.error("contained jobs will be refused: %s", error)


@asynccontextmanager
async def job_spawner(
    isolation: IsolationPolicy, tree: CgroupTree | None
) -> AsyncIterator[Spawner]:
    """The ``execute`` fork server (every job has at least a working
    directory to enter before its program runs, which ``posix_spawn`` cannot
    do on Python 3.11), wrapped to give each job its own cgroup where the host
    has a usable cgroup v2 hierarchy. The fork server is stopped on exit (the
    jobs it started are the daemon's own children)."""
    cgrouped = tree is not None and tree.enabled
    fork_server = ForkServerSpawner(Isolation.none())
    try:
        yield CgroupSpawner(fork_server, tree) if tree is not None and cgrouped else fork_server
    finally:
        with trio.CancelScope(shield=True):
            await fork_server.aclose()


@asynccontextmanager
async def job_cgroups(options: CgroupOptions | None) -> AsyncIterator[CgroupTree | None]:
    """The daemon's cgroup subtree, claimed for this daemon alone, with the
    leaves a crashed predecessor left killed and removed; on exit every job
    leaf is killed and removed."""
    if options is None:
        yield None
        return
    tree = CgroupTree.discover(options)
    try:
        with tree.claimed():
            stale = await tree.cleanup_stale()
            if stale:
                log.warning("removed %d job cgroups left by an earlier daemon", len(stale))
            try:
                yield tree
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(KILL_TIMEOUT):
                    await tree.remove_all()
    finally:
        tree.close()


async def serve(
    config: ServeConfig,
    *,
    task_status: trio.TaskStatus[RunningDaemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon on ``config.addr`` until cancelled.

    Start-up errors (certificate files, the address, the cgroup subtree) raise
    ``ConfigError`` before anything is served, as does a job database this
    version cannot use (newer or damaged). On cancellation the listeners
    close, every connection and log stream ends, every job's process tree is
    killed and reaped, its cgroup removed and its end recorded, before this
    returns; job records and output stay in the state directory.
    """
    ssl_context = check_config(config)
    warn_if_jobs_cannot_be_contained()
    if config.listen_sockets:
        listeners = activated_listeners(config.listen_sockets)
    else:
        listeners = await open_listeners(config.addr)
    async with AsyncExitStack() as stack:
        for listener in listeners:
            stack.push_async_callback(listener.aclose)
        await serve_on(listeners, config, ssl_context=ssl_context, task_status=task_status)


async def serve_on(
    listeners: Sequence[trio.abc.Listener[Any]],
    config: ServeConfig,
    *,
    ssl_context: ssl.SSLContext,
    spawner: Spawner | None = None,
    observer: Observer | None = None,
    store_offload: Offload | None = None,
    task_status: trio.TaskStatus[RunningDaemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon on listeners the caller owns (TCP, or memory listeners
    in tests) until cancelled; ``config.addr`` is not used. ``spawner``
    replaces the one the configuration would choose (a fake, in tests);
    ``observer`` is told of every connection and call (default: nobody);
    ``store_offload`` runs the job database's commits (default: a worker
    thread; tests under the autojump clock commit inline, since a wait for a
    thread lets virtual time jump). Guarantees on cancellation as ``serve``."""
    config.isolation.validate()
    addresses = listening_addresses(listeners)
    async with AsyncExitStack() as stack:
        ops = await stack.enter_async_context(observability(config.observe, config.tls))
        tree = await stack.enter_async_context(job_cgroups(config.cgroups))
        if spawner is None:
            spawner = await stack.enter_async_context(job_spawner(config.isolation, tree))
        warnings = check_host_support(config.requested, config.cgroups, tree, config.isolation)
        with (
            state_directory(config.state_dir) as state_dir,
            JobStore.opened(state_dir, offload=store_offload) as store,
        ):
            isolation = hide_daemon_files(config.isolation, state_dir, config.tls.key)
            supervisor = Supervisor(
                spawner,
                SupervisorConfig(
                    state_dir=state_dir,
                    output_cap=config.output_cap,
                    max_output_total=config.max_output_total,
                    min_free_disk=config.min_free_disk,
                    output_linger=config.output_linger,
                    shutdown_grace=config.shutdown_grace,
                    isolation=isolation,
                    max_running_jobs=config.max_running_jobs,
                    max_running_jobs_per_client=config.max_running_jobs_per_client,
                    retain_jobs=config.retain_jobs,
                    retain_for=config.retain_for,
                ),
                limits=tree,
                store=store,
                events=ops.events,
            )
            service = JobControllerService(
                supervisor,
                max_log_streams_per_client=config.max_log_streams_per_client,
                max_argv_bytes=config.max_argv_bytes,
                max_env_bytes=config.max_env_bytes,
            )
            health = HealthService()
            services = [service.service, health.service]
            services += Reflection(s.name for s in services).services()
            observers = [ops.observer] if observer is None else [ops.observer, observer]
            server = GrpcServer(
                ops.guard(services),
                ssl_context,
                config.transport,
                observer=Fanout(observers, []),
                admission=Admission(_fitted_admission(config.admission)),
            )
            # Shielded from the daemon's cancellation, so that health watchers
            # are told NOT_SERVING before connections close (below).
            server_scope = trio.CancelScope(shield=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                nursery.start_soon(_serve_within, server_scope, server, listeners)
                try:  # from here on, whatever ends this ends the shielded server too
                    ops.start(nursery, DaemonState(supervisor, service, health), services)
                    health.set_serving(True)
                    for warning in warnings:  # once start-up can no longer fail
                        log.warning("%s", warning)
                    if tree is not None and tree.enabled and not tree.reasons:
                        log.info("%s", tree.describe())  # what is missing is in a warning
                    if addresses:
                        log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))
                    task_status.started(
                        RunningDaemon(addresses, supervisor, server, state_dir, health, ops)
                    )
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await health.shutting_down()
                        await server.shut_down(SHUTDOWN_GOODBYE)
                    server_scope.cancel()


def _fitted_admission(limits: AdmissionLimits) -> AdmissionLimits:
    """``limits`` with a descriptor reserve this process's limit can hold
    (``fit_fd_reserve``): a daemon run in a process limited to 1024
    descriptors would otherwise refuse every connection. The one place the
    reserve is fitted: ``rund-trio serve`` raises the limit first and refuses
    an explicit reserve that cannot fit."""
    reserve, warning = fit_fd_reserve(descriptor_limit(), limits.fd_reserve, explicit=False)
    if warning is None:
        return limits
    log.warning("%s", warning)
    return replace(limits, fd_reserve=reserve)


async def _serve_within(
    scope: trio.CancelScope, server: GrpcServer, listeners: Sequence[trio.abc.Listener[Any]]
) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(server.serve_on, listener)

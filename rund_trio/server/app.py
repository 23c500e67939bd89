"""The daemon process: one nursery owning the gRPC server and the supervisor."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from rund_trio.address import parse_address
from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError
from rund_trio.isolation.spec import Isolation
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from rund_trio.jobs.spec import MAX_ARGV_BYTES
from rund_trio.jobs.store import JobStore, Offload
from rund_trio.jobs.supervisor import KILL_TIMEOUT, Supervisor, SupervisorConfig
from rund_trio.logs.budget import Reserve
from rund_trio.logs.state_dir import state_directory
from rund_trio.process.base import Spawner
from rund_trio.process.cgrouped import CgroupSpawner
from rund_trio.process.forkserver import ForkServerSpawner
from rund_trio.process.posix import PosixSpawner
from rund_trio.rpc import GrpcServer, TransportConfig
from rund_trio.server.calls import NullObserver, Observer
from rund_trio.server.service import JobControllerService
from rund_trio.tls.context import TlsFiles

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunningDaemon:
    """What ``serve`` hands its caller once it accepts connections."""

    addresses: list[tuple[str, int]]
    supervisor: Supervisor
    server: GrpcServer
    state_dir: Path


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
            raise ConfigError(f"cannot hide {path} from jobs: No such file or directory")
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
    """The cheapest spawner that can contain jobs as configured: plain
    ``posix_spawn`` when there is nothing to set up before the program runs,
    the ``execute`` fork server otherwise; wrapped to give each job its own
    cgroup where the host has a usable cgroup v2 hierarchy. The fork server is
    stopped on exit (the jobs it started are the daemon's own children)."""
    cgrouped = tree is not None and tree.enabled
    # Only host jobs without namespaces need nothing set up: a contained job
    # has its capabilities and seccomp filter applied by the fork server's child.
    nothing_to_set_up = IsolationPolicy(namespaces=False, default_profile=Profile.HOST)
    if isolation == nothing_to_set_up and not cgrouped:
        yield PosixSpawner()
        return
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
    ssl_context = config.tls.server_context()
    config.isolation.validate()
    warn_if_jobs_cannot_be_contained()
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
        tree = await stack.enter_async_context(job_cgroups(config.cgroups))
        if spawner is None:
            spawner = await stack.enter_async_context(job_spawner(config.isolation, tree))
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
            )
            service = JobControllerService(
                supervisor,
                max_log_streams_per_client=config.max_log_streams_per_client,
                max_argv_bytes=config.max_argv_bytes,
            )
            server = GrpcServer(
                [service.service], ssl_context, config.transport, observer or NullObserver()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                for listener in listeners:
                    nursery.start_soon(server.serve_on, listener)
                if tree is not None:
                    log.info("%s", tree.describe())
                if addresses:
                    log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))
                task_status.started(RunningDaemon(addresses, supervisor, server, state_dir))

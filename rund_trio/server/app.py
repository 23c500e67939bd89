"""The daemon process: one nursery owning the gRPC server and the supervisor."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import anyio.abc
import trio

from rund_trio.cgroups.tree import CgroupOptions, CgroupTree
from rund_trio.errors import ConfigError
from rund_trio.isolation.spec import Isolation
from rund_trio.jobs.isolation_policy import IsolationPolicy
from rund_trio.jobs.spec import MAX_ARGV_BYTES
from rund_trio.jobs.supervisor import KILL_TIMEOUT, Supervisor, SupervisorConfig
from rund_trio.logs.budget import Reserve
from rund_trio.logs.state_dir import state_directory
from rund_trio.process.base import Spawner
from rund_trio.process.cgrouped import CgroupSpawner
from rund_trio.process.forkserver import ForkServerSpawner
from rund_trio.process.posix import PosixSpawner
from rund_trio.server.address import parse_address
from rund_trio.server.host_support import Requested, check_host_support
from rund_trio.server.service import JobControllerService
from rund_trio.server.transport import GrpcServer, TransportConfig
from rund_trio.tls.context import TlsFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    tls: TlsFiles
    addr: str = ":8000"
    state_dir: Path | None = None
    """None: a fresh private directory under the system temp directory,
    removed at exit."""
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


async def open_listener(addr: str) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    host, port = parse_address(addr, default_host=None)
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        raise ConfigError(f"cannot listen on {addr}: {error.strerror or error}") from None


def listening_addresses(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
) -> list[tuple[str, int]]:
    listeners = getattr(listener, "listeners", [listener])
    addresses = []
    for one in listeners:
        host, port = one.extra(anyio.abc.SocketAttribute.local_address)[:2]
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
    if isolation == IsolationPolicy(namespaces=False) and not cgrouped:
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
    """Run the daemon until cancelled.

    Start-up errors (certificate files, the address, the cgroup subtree) raise
    ``ConfigError`` before anything is served. On cancellation the listener
    closes, every connection and log stream ends, every job's process tree is
    killed and reaped, its cgroup removed, and the job output files are
    removed, before this returns.
    """
    ssl_context = config.tls.server_context()
    config.isolation.validate()
    listener = await open_listener(config.addr)
    addresses = listening_addresses(listener)
    async with (
        listener,
        job_cgroups(config.cgroups) as tree,
        job_spawner(config.isolation, tree) as spawner,
    ):
        warnings = check_host_support(config.requested, config.cgroups, tree, config.isolation)
        with state_directory(config.state_dir) as state_dir:
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
                ),
                limits=tree,
            )
            service = JobControllerService(
                supervisor,
                max_log_streams_per_client=config.max_log_streams_per_client,
                max_argv_bytes=config.max_argv_bytes,
            )
            server = GrpcServer([service.service], ssl_context, config.transport)
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                nursery.start_soon(server.serve, listener)
                for warning in warnings:  # once start-up can no longer fail
                    log.warning("%s", warning)
                if tree is not None and tree.enabled and not tree.reasons:
                    log.info("%s", tree.describe())  # what is missing is in a warning
                log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))
                task_status.started(RunningDaemon(addresses, supervisor, server, state_dir))

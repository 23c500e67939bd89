"""The daemon process: one nursery owning the gRPC server and the supervisor."""

from __future__ import annotations

import logging
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import trio

from rund_trio.errors import ConfigError
from rund_trio.jobs.supervisor import Supervisor, SupervisorConfig
from rund_trio.process.base import Spawner
from rund_trio.server.address import parse_address
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
    output_linger: float = 2.0
    shutdown_grace: float = 0.0
    transport: TransportConfig = field(default_factory=TransportConfig)


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


@contextmanager
def state_directory(path: Path | None) -> Iterator[Path]:
    """The directory job output goes to, private to the daemon (mode 0700).

    A directory the daemon made itself is removed on exit; a given one is kept
    (the supervisor deletes the files it wrote there).
    """
    if path is None:
        made = Path(tempfile.mkdtemp(prefix="rund-trio-"))
        try:
            yield made
        finally:
            shutil.rmtree(made, ignore_errors=True)
        return
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"cannot use --state-dir {path}: {error.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"--state-dir {path} is accessible to other users (mode {stat.S_IMODE(mode):o}); "
            "job output must stay private: chmod 700 it"
        )
    yield path


async def serve(
    config: ServeConfig,
    spawner: Spawner,
    *,
    task_status: trio.TaskStatus[RunningDaemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled.

    Start-up errors (certificate files, the address) raise ``ConfigError``
    before anything is served. On cancellation the listener closes, every
    connection and log stream ends, every job's process tree is killed and
    reaped, and the job output files are removed, before this returns.
    """
    ssl_context = config.tls.server_context()
    listener = await open_listener(config.addr)
    addresses = listening_addresses(listener)
    with state_directory(config.state_dir) as state_dir:
        supervisor = Supervisor(
            spawner,
            SupervisorConfig(
                state_dir=state_dir,
                output_cap=config.output_cap,
                output_linger=config.output_linger,
                shutdown_grace=config.shutdown_grace,
            ),
        )
        server = GrpcServer(
            [JobControllerService(supervisor).service], ssl_context, config.transport
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            nursery.start_soon(server.serve, listener)
            log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))
            task_status.started(RunningDaemon(addresses, supervisor, server, state_dir))

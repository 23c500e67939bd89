"""Connection admission on a real daemon: connections beyond the handshake
caps are closed at once, before any TLS work, and others still get in; a
client certificate's connections beyond its cap are closed after the
handshake; with the descriptor reserve reached every new one is shed."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.errors import ConnectionFailed, RpcError
from rund_trio.rpc import TransportConfig
from rund_trio.server.admission import (
    MIN_CONNECTION_DESCRIPTORS,
    AdmissionLimits,
    Shed,
    descriptor_limit,
)
from tests.conftest import Daemon, Pki, start_daemon

UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
FLOOD_SOURCE = "127.0.0.2"
"""Another loopback address: the legitimate clients come from 127.0.0.1."""


@asynccontextmanager
async def silent_connection(daemon: Daemon) -> AsyncIterator[socket.socket]:
    """A TCP connection from FLOOD_SOURCE that never starts its handshake,
    returned once the daemon has taken it up."""
    with socket.socket() as sock:
        sock.bind((FLOOD_SOURCE, 0))
        sock.connect(("127.0.0.1", daemon.port))  # loopback: the kernel completes it at once
        await trio.testing.wait_all_tasks_blocked()
        yield sock


async def closed_at_once(sock: socket.socket) -> bool:
    """True if the daemon has closed ``sock`` by now (it waits for nothing else)."""
    await trio.testing.wait_all_tasks_blocked()
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def works(daemon: Daemon, name: str = "alice") -> bool:
    async with daemon.client(name) as rund:
        with pytest.raises(RpcError, match="NOT_FOUND"):
            await rund.status(UNKNOWN_JOB)
    return True


@pytest.fixture
async def capped(nursery: trio.Nursery, pki: Pki, tmp_path: Path) -> Daemon:
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        transport=TransportConfig(handshake_timeout=600),
        admission=AdmissionLimits(
            max_handshakes=3, max_handshakes_per_source=2, max_connections_per_client=1
        ),
    )


async def test_a_source_beyond_its_handshake_cap_is_closed_at_once(capped: Daemon) -> None:
    admission = capped.running.server.admission
    async with silent_connection(capped) as first, silent_connection(capped) as second:
        assert admission.handshakes == 2
        async with silent_connection(capped) as third:
            assert await closed_at_once(third)
        assert not await closed_at_once(first)
        assert not await closed_at_once(second)
        assert admission.shed[Shed.SOURCE] == 1
        assert await works(capped), "a client from another address still gets in"


async def test_connections_beyond_the_handshake_cap_are_closed_at_once(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        transport=TransportConfig(handshake_timeout=600),
        admission=AdmissionLimits(max_handshakes=1, max_handshakes_per_source=None),
    )
    caplog.set_level(logging.INFO)
    async with silent_connection(daemon):
        async with silent_connection(daemon) as second:
            assert await closed_at_once(second)
        with pytest.raises(ConnectionFailed):
            await works(daemon)
    assert await works(daemon), "the slot is free again"
    assert f"closed a connection from {FLOOD_SOURCE} at once: {Shed.HANDSHAKES.value}" in (
        caplog.text
    )


async def test_a_clients_connections_beyond_its_cap_are_closed(capped: Daemon) -> None:
    async with capped.client("alice") as held:
        with pytest.raises(RpcError, match="NOT_FOUND"):
            await held.status(UNKNOWN_JOB)
        with pytest.raises(ConnectionFailed):
            await works(capped, "alice")
        assert await works(capped, "bob"), "other clients are not counted with alice"
    await trio.testing.wait_all_tasks_blocked()
    assert await works(capped, "alice"), "her connection closed: she may connect again"
    assert capped.running.server.admission.shed[Shed.CLIENT] == 1


async def test_with_the_descriptor_reserve_reached_connections_are_shed(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The largest reserve the daemon keeps (it leaves MIN_CONNECTION_DESCRIPTORS
    # beside it), then that many descriptors taken, so none is left to spare.
    reserve = descriptor_limit() - MIN_CONNECTION_DESCRIPTORS
    daemon = await start_daemon(
        nursery, pki, tmp_path, admission=AdmissionLimits(fd_reserve=reserve)
    )
    taken = [os.dup(0) for _ in range(MIN_CONNECTION_DESCRIPTORS)]
    try:
        with caplog.at_level(logging.INFO), pytest.raises(ConnectionFailed):
            await works(daemon)
    finally:
        for fd in taken:
            os.close(fd)
    assert Shed.DESCRIPTORS.value in caplog.text


class _Seen(logging.Handler):
    """Sets ``event`` at the first record containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_running_out_of_descriptors_pauses_accepting_without_ending_it(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, admission=AdmissionLimits(fd_reserve=0))
    seen = _Seen("cannot accept connections: Too many open files")
    logger = logging.getLogger("rund_trio.rpc")
    logger.addHandler(seen)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    waiting = socket.socket()
    fillers: list[int] = []
    try:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, limits[1])
        )
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        waiting.connect(("127.0.0.1", daemon.port))  # needs no new descriptor here
        await seen.event.wait()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        logger.removeHandler(seen)
    waiting.close()
    assert await works(daemon), "the daemon accepts again once descriptors are free"

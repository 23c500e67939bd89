"""Fixtures shared by the integration tests: a development PKI with several
client identities, and a real daemon on loopback."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from rund_trio.cgroups.discovery import read_location
from rund_trio.cgroups.tree import CgroupOptions
from rund_trio.client.api import RundClient
from rund_trio.rpc import TransportConfig
from rund_trio.server.app import RunningDaemon, ServeConfig, serve
from rund_trio.tls.certs import ClientSpec, PkiFiles, generate_pki
from rund_trio.tls.context import TlsFiles

CLIENTS = (
    ClientSpec("alice", extra_sans=("email:alice@example.com",)),
    # alice's second certificate: shares only her email address
    ClientSpec("alice-laptop", extra_sans=("email:alice@example.com",)),
    ClientSpec("bob"),
    ClientSpec("nobody", no_san=True),
)


@dataclass(frozen=True)
class Pki:
    files: PkiFiles

    @property
    def dir(self) -> Path:
        return self.files.out_dir

    def client_tls(self, name: str) -> TlsFiles:
        pair = self.files.clients[name]
        return TlsFiles(ca=self.files.ca.cert, cert=pair.cert, key=pair.key)

    def server_tls(self) -> TlsFiles:
        return TlsFiles(
            ca=self.files.ca.cert, cert=self.files.server.cert, key=self.files.server.key
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A P-521 PKI (the default) with clients alice, alice-laptop, bob and nobody."""
    return Pki(generate_pki(tmp_path_factory.mktemp("pki"), clients=CLIENTS))


@pytest.fixture(scope="session")
def pki_p384(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The same with a P-384 server key, which grpcio clients can handshake with."""
    return Pki(
        generate_pki(tmp_path_factory.mktemp("pki384"), clients=CLIENTS, server_curve="P-384")
    )


def private_cgroup_root() -> Path | None:
    """A cgroup subtree of its own for one test daemon, beside the default one,
    so test daemons never contend with each other or with a real daemon."""
    location = read_location()
    if location is None:
        return None
    return location.path / f"rund-trio-test-{secrets.token_hex(6)}"


@dataclass
class Daemon:
    running: RunningDaemon
    pki: Pki

    @property
    def port(self) -> int:
        return self.running.addresses[0][1]

    @property
    def addr(self) -> str:
        return f"localhost:{self.port}"

    def client(self, name: str = "alice") -> AbstractAsyncContextManager[RundClient]:
        return RundClient.connect(self.addr, self.pki.client_tls(name).client_context())


DaemonFactory = Callable[..., AbstractAsyncContextManager[Daemon]]


async def start_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, **overrides: object
) -> Daemon:
    config = ServeConfig(
        **{  # type: ignore[arg-type]
            "tls": pki.server_tls(),
            "state_dir": tmp_path / "state",
            "addr": "127.0.0.1:0",
            "output_linger": 0.5,
            "cgroups": CgroupOptions(root=private_cgroup_root()),
            **overrides,
        },
    )
    running: RunningDaemon = await nursery.start(serve, config)
    return Daemon(running, pki)


@pytest.fixture
async def daemon(nursery: trio.Nursery, pki: Pki, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon on 127.0.0.1 with the P-521 PKI, cancelled when the test ends."""
    yield await start_daemon(nursery, pki, tmp_path)


@pytest.fixture
async def fast_handshake_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> AsyncIterator[Daemon]:
    yield await start_daemon(
        nursery, pki, tmp_path, transport=TransportConfig(handshake_timeout=0.2)
    )


BUSYBOX_APPLETS = ("sh", "ls", "cat", "ps", "hostname", "mount", "echo", "id", "test", "true")


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    """A tiny root filesystem: a static busybox and its applet links."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("needs a static busybox: apt-get install -y busybox-static")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "marker").write_text("inside the rootfs\n")
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    return root


SHARED_TMP = Path("/var/tmp")
"""Where tests put files a contained job must see: the host's /tmp is not
visible in a contained job (it has a private one), the rest of the host's
file system is, read-only."""


@pytest.fixture
def job_visible_dir() -> Iterator[Path]:
    """A fresh host directory (world-readable) that contained jobs can read."""
    try:
        path = Path(tempfile.mkdtemp(prefix="rund-trio-test-", dir=SHARED_TMP))
    except OSError as error:
        pytest.skip(f"{SHARED_TMP} is not writable: {error.strerror}")
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host_cgroup() -> Iterator[Path]:
    """A cgroup of this test's own on the host's cgroup2 hierarchy (skips where
    there is none or it is not writable), removed with its children afterwards."""
    location = read_location()
    if location is None:
        pytest.skip("no cgroup2 hierarchy on this machine")
    root = location.mount.mount_point / f"rund-trio-test-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        os.mkdir(root)
    except OSError as error:
        pytest.skip(f"cgroup2 at {location.mount.mount_point} is not writable: {error.strerror}")
    try:
        yield root
    finally:
        for sub, dirs, _files in os.walk(root, topdown=False):
            for name in dirs:
                os.rmdir(os.path.join(sub, name))
        os.rmdir(root)

"""Fixtures for driving ``rund-trio`` through real subprocesses, as a user
types it: a PKI made by ``rund-trio certs``, and daemons started with
``rund-trio serve`` and stopped with a signal."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import private_cgroup_root

RUND = shutil.which("rund-trio", path=str(Path(sys.executable).parent))
assert RUND is not None, "the rund-trio script is not installed next to the Python running pytest"

CLIENTS = ("alice", "bob")
PKI_FILES = ("ca", "server", *CLIENTS)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RUND_* variables, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RUND_")}
    env.update(extra)
    return env


def rund(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 20,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``rund-trio ARGS`` to completion, capturing its output as bytes."""
    return subprocess.run(
        [RUND, *map(str, args)],
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


def written_lines(out: Path, names: Sequence[str]) -> set[str]:
    """The lines ``rund-trio certs --out OUT`` prints for writing ``names``."""
    return {f"wrote {out / file}" for name in names for file in (f"{name}.pem", f"{name}-key.pem")}


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"

    def server_args(self) -> list[str]:
        return [
            "--ca",
            str(self.ca),
            "--cert",
            str(self.cert("server")),
            "--key",
            str(self.key("server")),
        ]

    def client_args(self, name: str) -> list[str]:
        return ["--ca", str(self.ca), "--cert", str(self.cert(name)), "--key", str(self.key(name))]


def make_pki(out: Path, *clients: str) -> Pki:
    """``rund-trio certs --out OUT --client NAME...``, checking what it prints."""
    client_flags = [arg for name in clients for arg in ("--client", name)]
    result = rund("certs", "--out", out, *client_flags, cwd=out.parent)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(set(lines))
    assert set(lines) == written_lines(out, ("ca", "server", *(clients or ("client",))))
    return Pki(out)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A PKI with client certificates for alice and bob."""
    return make_pki(tmp_path_factory.mktemp("pki") / "tls", *CLIENTS)


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated PKI (its own CA) with the default client ``client``."""
    return make_pki(tmp_path_factory.mktemp("other-pki") / "tls")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty working directory for client commands: no tls/ in it."""
    return tmp_path_factory.mktemp("cwd")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    addr: str
    stderr_lines: list[str] = field(default_factory=list)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send ``signum`` and wait for the daemon to exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


def _collect_lines(stream: IO[bytes], lines: list[str]) -> None:
    lines.extend(line.decode(errors="replace") for line in stream)


def spawn_daemon(
    args: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None
) -> Daemon:
    """``rund-trio serve --addr 127.0.0.1:PORT ARGS`` on a free port, returned
    once it logs "listening on"; retried when another process took the port."""
    output: list[str] = []
    cgroup_root = private_cgroup_root()
    cgroup_args = ["--cgroup-root", str(cgroup_root)] if cgroup_root else []
    if "--state-dir" not in args:  # not the persistent default, shared by every test
        cgroup_args.append("--temp-state-dir")
    for _ in range(5):
        port = unused_port()
        process = subprocess.Popen(
            [RUND, "serve", "--addr", f"127.0.0.1:{port}", *cgroup_args, *map(str, args)],
            cwd=cwd,
            env=clean_env() if env is None else env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        output = []
        watchdog = threading.Timer(20, process.kill)  # in case it never gets ready
        watchdog.start()
        for raw in process.stderr:  # blocks until the daemon logs a line or exits
            output.append(raw.decode(errors="replace"))
            if "listening on" in output[-1]:
                watchdog.cancel()
                daemon = Daemon(process, f"127.0.0.1:{port}", output)
                threading.Thread(
                    target=_collect_lines, args=(process.stderr, output), daemon=True
                ).start()
                return daemon
        watchdog.cancel()
        process.wait()
        if "Address already in use" not in "".join(output):
            break
    raise AssertionError("rund-trio serve did not start:\n" + "".join(output))


@contextmanager
def running_daemon(
    args: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """A daemon for the block; stopped with SIGTERM afterwards, which must exit 0."""
    daemon = spawn_daemon(args, cwd=cwd, env=env)
    try:
        yield daemon
    finally:
        if daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
        try:
            code = daemon.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()
            raise
    assert code == 0, f"rund-trio serve exited {code}:\n{daemon.stderr}"


@pytest.fixture(scope="module")
def daemon(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon on 127.0.0.1 shared by a test module, with the ``pki`` certificates."""
    with running_daemon(pki.server_args(), cwd=tmp_path_factory.mktemp("daemon")) as running:
        yield running


@dataclass(frozen=True)
class Client:
    """``rund-trio client ACTION --addr ... --ca ... --cert ... --key ...`` as one user."""

    daemon: Daemon
    pki: Pki
    name: str
    cwd: Path

    def args(self, action: str, *args: str | Path) -> list[str]:
        return [
            action,
            "--addr",
            self.daemon.addr,
            *self.pki.client_args(self.name),
            *map(str, args),
        ]

    def argv(self, action: str, *args: str | Path) -> list[str]:
        assert RUND is not None
        return [RUND, "client", *self.args(action, *args)]

    def __call__(self, action: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
        return rund("client", *self.args(action, *args), cwd=self.cwd)

    def start(self, *command: str | Path) -> str:
        """Start ``command`` and return its job id."""
        result = self("start", "--", *command)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode().strip()


@pytest.fixture
def alice(daemon: Daemon, pki: Pki, workdir: Path) -> Client:
    return Client(daemon, pki, "alice", workdir)


@pytest.fixture
def bob(daemon: Daemon, pki: Pki, workdir: Path) -> Client:
    return Client(daemon, pki, "bob", workdir)

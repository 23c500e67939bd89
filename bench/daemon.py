"""A real ``rund-trio serve`` subprocess for the benchmark: a PKI made by
``rund-trio certs`` in a temporary directory, a private loopback port, a
private cgroup subtree beside the default one, its RSS and CPU from /proc."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rund_trio.cgroups.discovery import read_location
from rund_trio.tls.context import client_ssl_context

CLIENT = "bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rund_executable() -> str:
    found = shutil.which("rund-trio", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit(
            f"bench: no rund-trio script next to {sys.executable}: run `just setup` first"
        )
    return found


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RUND_")}


@dataclass(frozen=True)
class Pki:
    dir: Path

    @classmethod
    def create(cls, out: Path) -> Pki:
        subprocess.run(
            [rund_executable(), "certs", "--out", str(out), "--client", CLIENT],
            check=True,
            stdout=subprocess.DEVNULL,
            env=clean_env(),
            timeout=60,
        )
        return cls(out)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def server_args(self) -> list[str]:
        d = self.dir
        return [
            "--ca",
            str(d / "ca.pem"),
            "--cert",
            str(d / "server.pem"),
            "--key",
            str(d / "server-key.pem"),
        ]

    def client_args(self) -> list[str]:
        d = self.dir
        return [
            "--ca",
            str(d / "ca.pem"),
            "--cert",
            str(d / f"{CLIENT}.pem"),
            "--key",
            str(d / f"{CLIENT}-key.pem"),
        ]

    def client_context(self):  # type: ignore[no-untyped-def]
        d = self.dir
        return client_ssl_context(d / "ca.pem", d / f"{CLIENT}.pem", d / f"{CLIENT}-key.pem")


def private_cgroup_root() -> Path | None:
    """A cgroup subtree of its own beside the default one (as the tests do)."""
    location = read_location()
    if location is None:
        return None
    return location.path / f"rund-trio-bench-{secrets.token_hex(6)}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    addr: str
    cgroup_root: Path | None
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """VmRSS of the daemon process, KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """user + system CPU time of the daemon process itself."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def stop(self, timeout: float = 60) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self.cgroup_root is not None:
            with contextlib.suppress(OSError):
                self.cgroup_root.rmdir()
        return code


def _collect(stream, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    for raw in stream:
        lines.append(raw.decode(errors="replace"))
        del lines[:-200]


def spawn_daemon(
    name: str, pki: Pki, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Daemon:
    """``rund-trio serve --addr 127.0.0.1:PORT`` with the PKI, its own state
    directory (reused if it exists: a restart) and cgroup subtree, ``env``
    added to its environment; returned once it logs "listening on"."""
    state = workdir / f"state-{name}"
    state.mkdir(mode=0o700, exist_ok=True)
    cgroup_root = None if "--no-cgroups" in extra else private_cgroup_root()
    cgroup_args = ["--cgroup-root", str(cgroup_root)] if cgroup_root else []
    output: list[str] = []
    for _ in range(5):
        port = unused_port()
        process = subprocess.Popen(
            [
                rund_executable(),
                "serve",
                "--addr",
                f"127.0.0.1:{port}",
                *pki.server_args(),
                "--state-dir",
                str(state),
                *cgroup_args,
                *extra,
            ],
            cwd=workdir,
            env={**clean_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        output = []
        watchdog = threading.Timer(30, process.kill)  # in case it never gets ready
        watchdog.start()
        for raw in process.stderr:  # the daemon's log, until "listening on" or exit
            output.append(raw.decode(errors="replace"))
            if "listening on" in output[-1]:
                watchdog.cancel()
                threading.Thread(
                    target=_collect, args=(process.stderr, output), daemon=True
                ).start()
                return Daemon(name, process, f"127.0.0.1:{port}", cgroup_root, output)
        watchdog.cancel()
        process.wait()
        if "Address already in use" not in "".join(output):
            break
    raise SystemExit(f"bench: rund-trio serve ({name}) did not start:\n" + "".join(output))

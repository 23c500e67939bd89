"""``rund-trio serve`` under systemd: sd_notify through a real NOTIFY_SOCKET,
socket activation through LISTEN_FDS, and the shipped unit files."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import (
    RUND,
    Client,
    Daemon,
    Pki,
    clean_env,
    running_daemon,
)
from tests.conftest import private_cgroup_root

CONTRIB = Path(__file__).parents[2] / "contrib"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        yield path, sock


def next_message(sock: socket.socket) -> dict[str, str]:
    lines = sock.recv(4096).decode().split("\n")
    return dict(line.split("=", 1) for line in lines)


def test_serve_tells_systemd_it_is_ready_then_stopping(
    pki: Pki, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    env = clean_env(NOTIFY_SOCKET=path)
    with running_daemon(pki.server_args(), cwd=tmp_path, env=env) as daemon:
        ready = next_message(sock)
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(daemon.process.pid)
        assert ready["STATUS"].startswith("serving: 0 jobs running, 0 ended")
        daemon.stop(signal.SIGTERM)
    messages = []
    while not any(m.get("STOPPING") == "1" for m in messages):
        messages.append(next_message(sock))
    assert messages[-1]["STATUS"] == "shutting down"


def test_serve_reports_its_jobs_in_status(
    pki: Pki, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    with running_daemon(pki.server_args(), cwd=tmp_path, env=clean_env(NOTIFY_SOCKET=path)) as d:
        next_message(sock)  # READY=1
        Client(d, pki, "alice", tmp_path).start("sleep", "1000")
        while "1 jobs running" not in (status := next_message(sock).get("STATUS", "")):
            pass
        assert status.startswith("serving: 1 jobs running, 0 ended")


def test_serve_pings_the_watchdog_at_half_its_interval(
    pki: Pki, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    env = clean_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    with running_daemon(pki.server_args(), cwd=tmp_path, env=env):
        pings = 0
        while pings < 3:  # each within the socket's timeout: the daemon keeps pinging
            pings += next_message(sock).get("WATCHDOG") == "1"


def test_a_missing_notify_socket_is_one_warning_and_the_daemon_serves(
    pki: Pki, tmp_path: Path
) -> None:
    env = clean_env(NOTIFY_SOCKET=str(tmp_path / "no-such-socket"))
    with running_daemon(pki.server_args(), cwd=tmp_path, env=env) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        assert alice("run", "--", "echo", "still serving").stdout == b"still serving\n"
    warnings = [line for line in daemon.stderr_lines if "NOTIFY_SOCKET" in line]
    assert len(warnings) == 1
    assert "No such file or directory; the daemon keeps serving" in warnings[0]


def test_jobs_do_not_inherit_systemds_variables(
    pki: Pki, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, _ = notify_socket
    env = clean_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="60000000")
    with running_daemon(pki.server_args(), cwd=tmp_path, env=env) as daemon:
        job_env = Client(daemon, pki, "alice", tmp_path)("run", "--", "env").stdout.decode()
    assert "NOTIFY_SOCKET" not in job_env and "WATCHDOG" not in job_env


def activated_daemon(pki: Pki, tmp_path: Path, listener: socket.socket) -> Daemon:
    """``rund-trio serve`` given ``listener`` as descriptor 3, as systemd does."""
    assert RUND is not None
    cgroup_root = private_cgroup_root()
    cgroup_args = ["--cgroup-root", str(cgroup_root)] if cgroup_root else []
    fd = listener.fileno()
    # descriptor 3, LISTEN_PID its own pid: set in the process that execs rund-trio
    script = (
        "import os, sys\n"
        f"os.dup2({fd}, 3); os.close({fd})\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='rund')\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            RUND,
            "serve",
            "--temp-state-dir",
            *pki.server_args(),
            *cgroup_args,
        ],
        cwd=tmp_path,
        env=clean_env(),
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    watchdog = threading.Timer(20, process.kill)
    watchdog.start()
    for raw in process.stderr:
        lines.append(raw.decode(errors="replace"))
        if "listening on" in lines[-1]:
            break
    watchdog.cancel()
    host, port = listener.getsockname()[:2]
    return Daemon(process, f"{host}:{port}", lines)


def test_serve_accepts_on_a_socket_systemd_passed(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        daemon = activated_daemon(pki, tmp_path, listener)
    try:
        assert f"listening on {daemon.addr}" in daemon.stderr
        alice = Client(daemon, pki, "alice", tmp_path)
        result = alice("run", "--", "echo", "activated")
        assert result.stdout == b"activated\n", result.stderr
    finally:
        assert daemon.stop(signal.SIGTERM) == 0


def test_serve_refuses_a_passed_descriptor_that_is_not_listening(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as not_listening:
        not_listening.bind(("127.0.0.1", 0))
        daemon = activated_daemon(pki, tmp_path, not_listening)
    assert daemon.process.wait(timeout=10) == 1
    assert daemon.stderr == (
        "rund-trio: descriptor 3 passed by systemd (LISTEN_FDS) is not listening\n"
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", ["rund-trio.service", "rund-trio.socket"])
def test_the_shipped_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    for name in ("rund-trio.service", "rund-trio.socket"):
        text = (CONTRIB / name).read_text()
        # verify checks that ExecStart's program exists: point it at ours
        assert RUND is not None
        (tmp_path / name).write_text(text.replace("/usr/local/bin/rund-trio", RUND))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        # this machine may not boot with systemd: only the unit's own lines count
        if "rund-trio" in line
    ]
    assert problems == []
    assert result.returncode == 0, result.stderr

"""sd_notify(3) against a real unix datagram socket, and the environment
systemd's socket activation leaves."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rund_trio.server.systemd import Notifier, listen_sockets


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound where systemd's would be: its path and itself."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_sends_ready_status_and_mainpid(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    notifier = Notifier(path)
    assert notifier.ready("serving: 0 jobs")
    assert received(sock) == ["READY=1", "STATUS=serving: 0 jobs", f"MAINPID={os.getpid()}"]


def test_stopping_status_and_watchdog_are_one_datagram_each(
    receiver: tuple[str, socket.socket],
) -> None:
    path, sock = receiver
    notifier = Notifier(path)
    notifier.status("serving: 3 jobs running")
    notifier.watchdog()
    notifier.stopping()
    assert received(sock) == ["STATUS=serving: 3 jobs running"]
    assert received(sock) == ["WATCHDOG=1"]
    assert received(sock) == ["STOPPING=1", "STATUS=shutting down"]


def test_an_abstract_socket_is_written_with_at() -> None:
    name = f"rund-trio-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).watchdog()
        assert received(sock) == ["WATCHDOG=1"]


def test_a_missing_socket_is_one_warning_then_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING):
        assert not notifier.ready("serving")
        assert not notifier.status("serving")
        assert not notifier.stopping()
    (record,) = caplog.records
    assert record.getMessage() == (
        f"cannot notify systemd through NOTIFY_SOCKET={tmp_path / 'gone'}: "
        "No such file or directory; the daemon keeps serving without notifying it"
    )


def test_the_environment_is_taken_and_removed() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "PATH": "/bin"}
    notifier = Notifier.from_environment(env)
    assert notifier is not None
    assert notifier.address == "/run/x"
    assert notifier.watchdog_interval == 15.0
    assert env == {"PATH": "/bin"}, "jobs must not inherit systemd's variables"


def test_no_notify_socket_means_no_notifier() -> None:
    assert Notifier.from_environment({}) is None


def test_a_watchdog_meant_for_another_process_is_not_pinged() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_environment(env)
    assert notifier is not None and notifier.watchdog_interval is None


def test_a_relative_notify_socket_is_a_warning_and_no_notifier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert Notifier.from_environment({"NOTIFY_SOCKET": "run/x"}) is None
    assert "neither a path nor @abstract" in caplog.text


def test_sockets_passed_to_another_process_are_not_taken() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "rund"}
    assert listen_sockets(env) == []
    assert env == {}, "jobs must not inherit systemd's variables"


def test_no_listen_fds_means_no_sockets() -> None:
    assert listen_sockets({}) == []

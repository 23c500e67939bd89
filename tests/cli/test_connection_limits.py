"""``rund-trio serve``'s connection limits and its own log, as an operator
sees them: a flood from one address is shed and logged in a few lines, other
clients still get in; ``--log-format json``; bad caps are one line."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.cli.conftest import Client, Pki, rund, running_daemon
from tests.cli.test_errors import assert_one_line_error

FLOOD = 40


def closed_by_the_daemon(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_flood_from_one_address_is_shed_in_few_log_lines_and_others_get_in(
    pki: Pki, tmp_path: Path
) -> None:
    args = [*pki.server_args(), "--max-handshakes-per-source", "2", "--handshake-timeout", "60"]
    with running_daemon(args, cwd=tmp_path) as daemon:
        host, port = daemon.addr.rsplit(":", 1)
        flood = []
        try:
            for _ in range(FLOOD):
                sock = socket.socket()
                sock.bind(("127.0.0.2", 0))
                sock.connect((host, int(port)))
                flood.append(sock)
            alice = Client(daemon, pki, "alice", tmp_path)
            assert alice("run", "--", "echo", "served").stdout == b"served\n"
            shed = sum(closed_by_the_daemon(sock) for sock in flood[2:])
        finally:
            for sock in flood:
                sock.close()
    assert shed == FLOOD - 2
    shed_lines = [line for line in daemon.stderr_lines if "closed a connection from" in line]
    assert 1 <= len(shed_lines) <= 10, "rate-limited"
    assert "--max-handshakes-per-source" in shed_lines[0]


def test_serve_log_format_json_writes_one_object_a_line(pki: Pki, tmp_path: Path) -> None:
    with running_daemon([*pki.server_args(), "--log-format", "json"], cwd=tmp_path) as daemon:
        Client(daemon, pki, "alice", tmp_path)("run", "--", "true")
    entries = [json.loads(line) for line in daemon.stderr_lines]
    assert any(entry["message"].startswith("listening on") for entry in entries)
    assert {"time", "level", "logger", "message"} <= set(entries[0])


def test_serve_with_a_bad_cap_is_one_line(pki: Pki, tmp_path: Path) -> None:
    result = rund("serve", *pki.server_args(), "--max-handshakes", "-1", cwd=tmp_path)
    assert_one_line_error(result, "--max-handshakes must be at least 1 (or 0 for no cap), not -1")

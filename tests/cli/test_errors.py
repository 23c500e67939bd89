"""Every failure of ``rund-trio client`` is one line on stderr starting with
"rund-trio:" and a non-zero exit status, never a traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Client, Daemon, Pki, clean_env, rund

UNKNOWN_ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *fragments: str) -> None:
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0
    assert result.stdout == b""
    for fragment in fragments:
        assert fragment in stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("rund-trio: ")
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr


def test_connection_refused_is_one_line(pki: Pki, workdir: Path) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        result = rund(
            "client", "status", "--addr", f"127.0.0.1:{port}", *pki.client_args("alice"),
            UNKNOWN_ULID, cwd=workdir,
        )  # fmt: skip
    assert_one_line_error(result, f"nothing listens on 127.0.0.1:{port} (connection refused)")


def test_missing_cert_file_is_one_line(daemon: Daemon, pki: Pki, workdir: Path) -> None:
    missing = workdir / "missing.pem"
    result = rund(
        "client", "status", "--addr", daemon.addr, "--ca", pki.ca, "--cert", missing,
        "--key", pki.key("alice"), UNKNOWN_ULID, cwd=workdir,
    )  # fmt: skip
    assert_one_line_error(result, str(missing), "does not exist")


def test_unknown_job_id_is_one_line_not_found(alice: Client) -> None:
    assert_one_line_error(alice("status", UNKNOWN_ULID), "NOT_FOUND")


def test_malformed_job_id_is_one_line_invalid_argument(alice: Client) -> None:
    assert_one_line_error(alice("status", "not-a-ulid"), "INVALID_ARGUMENT")


def test_missing_program_is_one_line_failed_precondition(alice: Client) -> None:
    result = alice("start", "--", "/no/such/program")
    assert_one_line_error(result, "FAILED_PRECONDITION", "/no/such/program")


@pytest.mark.parametrize("action", ["start", "run"])
def test_a_command_line_that_is_not_utf8_is_one_line(alice: Client, action: str) -> None:
    argv = [*alice.argv(action, "--"), b"printf", b"\xff"]
    result = subprocess.run(
        argv, cwd=alice.cwd, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True
    )
    assert_one_line_error(result, "argument 1 of the command is not valid UTF-8 (b'\\xff')")


def test_limit_this_host_cannot_enforce_is_one_line_failed_precondition(alice: Client) -> None:
    result = alice("start", "--max-memory-usage", "10M", "--", "true")
    assert_one_line_error(result, "FAILED_PRECONDITION")


def test_another_clients_job_is_one_line_not_found(alice: Client, bob: Client) -> None:
    job_id = alice.start("true")
    assert_one_line_error(bob("status", job_id), "NOT_FOUND", job_id)


def test_server_certificate_from_an_unknown_ca_is_one_line(
    daemon: Daemon, pki: Pki, other_pki: Pki, workdir: Path
) -> None:
    result = rund(
        "client", "status", "--addr", daemon.addr, "--ca", other_pki.ca,
        "--cert", pki.cert("alice"), "--key", pki.key("alice"), UNKNOWN_ULID, cwd=workdir,
    )  # fmt: skip
    assert_one_line_error(
        result, "has a certificate that --ca does not vouch for", f"(--ca {other_pki.ca})"
    )


def test_client_certificate_from_another_ca_is_one_line(
    daemon: Daemon, pki: Pki, other_pki: Pki, workdir: Path
) -> None:
    """The daemon refuses the certificate after the client's side of the TLS 1.3
    handshake is done: the client must report it, not hang."""
    result = rund(
        "client", "status", "--addr", daemon.addr, "--ca", pki.ca,
        "--cert", other_pki.cert("client"), "--key", other_pki.key("client"),
        UNKNOWN_ULID, cwd=workdir, timeout=10,
    )  # fmt: skip
    assert_one_line_error(
        result,
        f"the daemon at {daemon.addr} refused this client's certificate",
        f"(--cert {other_pki.cert('client')})",
    )


def test_a_reader_that_goes_away_ends_log_quietly(alice: Client) -> None:
    job_id = alice.start("head", "-c", "8M", "/dev/zero")
    log = subprocess.Popen(
        alice.argv("log", job_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()
    )
    assert log.stdout is not None and log.stderr is not None
    assert log.stdout.read(1) == b"\0"
    log.stdout.close()  # as `| head -c 1` does
    stderr = log.stderr.read()
    assert log.wait(timeout=30) == 128 + signal.SIGPIPE
    assert stderr == b""

"""``rund-trio serve``: start-up errors and shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.cli.conftest import (
    Client,
    Pki,
    clean_env,
    rund,
    running_daemon,
    spawn_daemon,
)
from tests.cli.test_errors import assert_one_line_error
from tests.procs import process_is_gone


def test_serve_with_a_missing_cert_file_is_one_line(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = rund(
        "serve", "--addr", "127.0.0.1:0", "--ca", pki.ca, "--cert", missing,
        "--key", pki.key("server"), cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, str(missing))


def test_serve_on_a_port_in_use_is_one_line(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = rund("serve", "--addr", addr, *pki.server_args(), cwd=tmp_path)
    assert_one_line_error(result, addr, "Address already in use")


def test_serve_with_a_bad_addr_is_one_line(pki: Pki, tmp_path: Path) -> None:
    result = rund("serve", "--addr", "nonsense", *pki.server_args(), cwd=tmp_path)
    assert_one_line_error(result, "nonsense")


def test_serve_hiding_a_missing_path_is_one_line(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--hide", missing, cwd=tmp_path
    )
    assert_one_line_error(result, f"cannot hide {missing} from jobs")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_on_a_signal_kills_jobs_removes_its_state_dir_and_exits_0(
    pki: Pki, tmp_path: Path, signum: signal.Signals
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = clean_env(TMPDIR=str(tmpdir))
    with running_daemon(pki.server_args(), cwd=tmp_path, env=env) as daemon:
        (state_dir,) = tmpdir.glob("rund-trio-*")
        alice = Client(daemon, pki, "alice", tmp_path)
        status = json.loads(alice("status", alice.start("sleep", "1000")).stdout)
        assert status["state"] == "JOB_STATE_RUNNING"
        assert not process_is_gone(status["pid"])
        assert daemon.stop(signum, timeout=5) == 0
    assert process_is_gone(status["pid"])
    assert not state_dir.exists()
    assert list(tmpdir.iterdir()) == []
    assert f"{signum.name}: shutting down" in daemon.stderr


def test_serve_on_sigterm_keeps_job_records_and_output_in_a_given_state_dir(
    pki: Pki, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    daemon = spawn_daemon([*pki.server_args(), "--state-dir", state_dir], cwd=tmp_path)
    try:
        alice = Client(daemon, pki, "alice", tmp_path)
        result = alice("run", "--", "echo", "kept while serving")
        assert result.stdout == b"kept while serving\n"
    finally:
        code = daemon.stop(signal.SIGTERM, timeout=5)
    assert code == 0
    (journal,) = state_dir.glob("*.log")
    assert b"kept while serving" in journal.read_bytes()
    assert (state_dir / "jobs.sqlite3").exists()


def test_serve_output_cap_ends_a_log_with_the_recorded_output_and_the_drop(
    pki: Pki, tmp_path: Path
) -> None:
    with running_daemon([*pki.server_args(), "--output-cap", "1K"], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        job_id = alice.start("head", "-c", "4096", "/dev/zero")
        log = alice("log", job_id)
    assert log.stdout == bytes(1024)
    assert log.returncode != 0
    assert log.stderr.decode() == (
        "rund-trio: RESOURCE_EXHAUSTED: 3072 bytes of this job's output were dropped and are "
        "not in this log: the job's output reached --output-cap (1 KiB per job)\n"
    )


def test_client_run_of_a_capped_job_warns_of_the_drop_and_exits_with_the_jobs_code(
    pki: Pki, tmp_path: Path
) -> None:
    with running_daemon([*pki.server_args(), "--output-cap", "1K"], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        run = alice("run", "--", "sh", "-c", "head -c 4096 /dev/zero; exit 3")
    assert run.stdout == bytes(1024)
    assert run.returncode == 3
    assert run.stderr.decode() == (
        "rund-trio: warning: 3072 bytes of this job's output were dropped and are "
        "not in this log: the job's output reached --output-cap (1 KiB per job)\n"
    )


def test_serve_max_output_total_refuses_starts_once_reached(pki: Pki, tmp_path: Path) -> None:
    args = [*pki.server_args(), "--max-output-total", "2K"]
    with running_daemon(args, cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        alice("log", alice.start("head", "-c", "4096", "/dev/zero"))
        refused = alice("start", "--", "true")
    assert refused.returncode != 0
    assert_one_line_error(refused, "RESOURCE_EXHAUSTED")
    assert b"--max-output-total (2 KiB)" in refused.stderr


def test_serve_min_free_disk_as_a_share_of_the_filesystem(pki: Pki, tmp_path: Path) -> None:
    args = [*pki.server_args(), "--min-free-disk", "100%"]
    with running_daemon(args, cwd=tmp_path) as daemon:
        refused = Client(daemon, pki, "alice", tmp_path)("start", "--", "true")
    assert_one_line_error(refused, "RESOURCE_EXHAUSTED")
    assert b"--min-free-disk" in refused.stderr


def test_serve_refuses_a_min_free_disk_that_is_not_a_size_or_a_percentage(
    pki: Pki, tmp_path: Path
) -> None:
    result = rund("serve", *pki.server_args(), "--min-free-disk", "120%", cwd=tmp_path)
    assert result.returncode == 2
    assert b"'120%' is not a percentage between 0% and 100%" in result.stderr


def test_serve_with_a_request_cap_http2_cannot_carry_is_one_line(pki: Pki, tmp_path: Path) -> None:
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--max-request-size", "1G",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, "--max-request-size must be between 1 byte and")


def test_serve_refuses_a_command_line_over_max_argv_bytes(pki: Pki, tmp_path: Path) -> None:
    with running_daemon([*pki.server_args(), "--max-argv-bytes", "16"], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        assert alice("run", "--", "echo", "0123456789").stdout == b"0123456789\n"
        result = alice("start", "--", "echo", "0123456789a")
    assert_one_line_error(result, "RESOURCE_EXHAUSTED", "at most 16 bytes", "--max-argv-bytes")


def test_serve_refuses_a_request_over_max_request_size(pki: Pki, tmp_path: Path) -> None:
    with running_daemon([*pki.server_args(), "--max-request-size", "1K"], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        assert alice("run", "--", "echo", "x" * 900).stdout == b"x" * 900 + b"\n"
        result = alice("start", "--", "echo", "x" * 1100)
    assert_one_line_error(result, "RESOURCE_EXHAUSTED", "at most 1024 bytes", "--max-request-size")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--retain-jobs", "-5", "is not a whole number of zero or more"),
        ("--retain-for", "forever", "is not a duration"),
    ],
)
def test_serve_refuses_a_retention_it_cannot_honour(
    pki: Pki, tmp_path: Path, flag: str, value: str, message: str
) -> None:
    result = rund("serve", "--temp-state-dir", *pki.server_args(), flag, value, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.decode()

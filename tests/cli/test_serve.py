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


def test_serve_on_sigterm_removes_job_output_from_a_given_state_dir(
    pki: Pki, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    daemon = spawn_daemon([*pki.server_args(), "--state-dir", state_dir], cwd=tmp_path)
    try:
        alice = Client(daemon, pki, "alice", tmp_path)
        result = alice("run", "--", "echo", "kept while serving")
        assert result.stdout == b"kept while serving\n"
        assert list(state_dir.glob("*.log")), "the job's output is in the state dir"
    finally:
        code = daemon.stop(signal.SIGTERM, timeout=5)
    assert code == 0
    assert state_dir.is_dir()
    assert list(state_dir.iterdir()) == []

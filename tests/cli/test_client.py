"""``rund-trio client`` against a daemon subprocess, as a user types it."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.cli.conftest import (
    Client,
    Daemon,
    Pki,
    clean_env,
    rund,
    running_daemon,
    written_lines,
)
from tests.procs import live_pids

ULID_LINE = re.compile(rb"[0-9A-HJKMNP-TV-Z]{26}\n")


def status_of(client: Client, job_id: str) -> dict[str, Any]:
    result = client("status", job_id)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert result.stdout.count(b"\n") == 1, "status prints exactly one line"
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def wait_for_end(client: Client, job_id: str) -> None:
    """``client log ID`` returns when the job has ended."""
    result = client("log", job_id)
    assert result.returncode == 0, result.stderr.decode()


@asynccontextmanager
async def process(argv: list[str]) -> AsyncIterator[trio.Process]:
    """``argv`` running with stdout and stderr piped; killed if still running at exit."""
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, wanted: bytes) -> None:
    """Receive from ``stream`` into ``buffer`` until ``buffer`` contains ``wanted``."""
    while wanted not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"end of stream before {wanted!r}; got {bytes(buffer)!r}"
        buffer += chunk


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


def test_start_prints_only_a_ulid_line(alice: Client) -> None:
    result = alice("start", "--", "true")
    assert result.returncode == 0
    assert ULID_LINE.fullmatch(result.stdout), result.stdout
    assert result.stderr == b""


@pytest.mark.parametrize(
    "command",
    [
        ["sh", "-c", "echo a; echo b >&2", "--", "-n", "two  spaces", ""],
        ["ls", "-l", "/"],
    ],
    ids=["sh-c", "ls-l"],
)
def test_start_passes_the_command_and_its_arguments_through_untouched(
    alice: Client, command: list[str]
) -> None:
    status = status_of(alice, alice.start(*command))
    assert status["name"] == command[0]
    assert status["args"] == command[1:]


def test_status_prints_one_json_object_with_proto_field_names_after_exit(alice: Client) -> None:
    job_id = alice.start("sh", "-c", "exit 3")
    wait_for_end(alice, job_id)
    status = status_of(alice, job_id)
    assert status["exit_code"] == 3
    assert type(status["exit_code"]) is int
    assert status["stopped"] is False
    assert status["killed"] is False
    assert status["state"] == "JOB_STATE_EXITED"
    assert re.fullmatch(r"\d+(\.\d+)?s", status["user_time"])
    assert re.fullmatch(r"\d+(\.\d+)?s", status["system_time"])
    assert "memory_current" in status
    assert not [key for key in status if re.search(r"[A-Z]", key)], "no camelCase keys"


def test_status_of_a_running_job_has_no_exit_code(alice: Client) -> None:
    status = status_of(alice, alice.start("sleep", "1000"))  # the daemon kills it at the end
    assert "exit_code" not in status
    assert status["state"] == "JOB_STATE_RUNNING"
    assert status["stopped"] is False
    assert status["killed"] is False
    assert isinstance(status["pid"], int) and status["pid"] > 0


def test_log_writes_stdout_and_stderr_byte_exact(alice: Client) -> None:
    job_id = alice.start(
        "sh", "-c", r"printf 'a\000b\377\r\n'; printf 'err\001\n' >&2; printf 'no newline'"
    )
    result = alice("log", job_id)
    assert result.returncode == 0
    assert result.stdout == b"a\x00b\xff\r\nno newline"
    assert result.stderr == b"err\x01\n"


async def test_log_follows_the_output_of_a_running_job(
    alice: Client, job_visible_dir: Path
) -> None:
    fifo = job_visible_dir / "release"
    os.mkfifo(fifo)
    job_id = alice.start("sh", "-c", f"echo first; read x < {fifo}; echo second")
    with trio.fail_after(15):
        async with process(alice.argv("log", job_id)) as log:
            assert log.stdout is not None and log.stderr is not None
            out = bytearray()
            await read_until(log.stdout, out, b"first\n")
            assert out == b"first\n"
            assert log.poll() is None, "log keeps following while the job runs"
            await trio.to_thread.run_sync(fifo.write_text, "go\n", abandon_on_cancel=True)
            out += await read_to_end(log.stdout)
            assert await read_to_end(log.stderr) == b""
            assert await log.wait() == 0
    assert out == b"first\nsecond\n"


async def test_log_interrupted_with_sigint_exits_130_without_a_traceback(alice: Client) -> None:
    job_id = alice.start("sh", "-c", "echo ready; exec sleep 1000")
    with trio.fail_after(15):
        async with process(alice.argv("log", job_id)) as log:
            assert log.stdout is not None and log.stderr is not None
            await read_until(log.stdout, bytearray(), b"ready\n")
            log.send_signal(signal.SIGINT)
            stderr = await read_to_end(log.stderr)
            code = await log.wait()
    assert b"Traceback" not in stderr
    assert stderr == b""
    assert code == 130  # the shell's 128 + SIGINT (0 would also have been acceptable)


async def test_run_interrupted_with_sigint_stops_the_job_gracefully_and_says_so(
    alice: Client,
) -> None:
    # Inside its PID namespace the job cannot tell its host pid: find it by a
    # unique command line instead.
    marker = str(secrets.randbelow(10**9) + 10**9)
    argv = alice.argv("run", "--", "sh", "-c", f"echo ready; exec sleep {marker}")
    with trio.fail_after(15):
        async with process(argv) as run:
            assert run.stdout is not None and run.stderr is not None
            await read_until(run.stdout, bytearray(), b"ready\n")
            assert live_pids(cmdline=b"sleep\0" + marker.encode() + b"\0")
            run.send_signal(signal.SIGINT)
            stderr = await read_to_end(run.stderr)
            code = await run.wait()
    assert not live_pids(cmdline=b"sleep\0" + marker.encode() + b"\0"), (
        "the job is stopped before run exits"
    )
    assert stderr.decode().startswith("rund-trio: SIGINT: stopping job ")
    assert stderr.count(b"\n") == 1 and b"SIGKILL after 10 s" in stderr, stderr
    assert code == 128 + signal.SIGTERM  # run exits with the stopped job's status


def test_run_exits_with_the_jobs_exit_code(alice: Client) -> None:
    result = alice("run", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7
    assert result.stderr == b""


def test_run_exits_128_plus_the_signal_that_killed_the_job(alice: Client) -> None:
    result = alice("run", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM


def test_run_with_an_isolated_network_sees_only_loopback(alice: Client) -> None:
    result = alice("run", "--network", "isolated", "--", "ls", "/sys/class/net")
    assert (result.returncode, result.stdout) == (0, b"lo\n")


def test_run_as_another_user_is_refused_unless_the_daemon_allows_it(alice: Client) -> None:
    result = alice("run", "--uid", "65534", "--", "id", "-u")
    assert result.returncode == 1
    assert result.stderr.startswith(b"rund-trio: PERMISSION_DENIED: ")


def test_run_prints_the_jobs_stdout_and_stderr(alice: Client) -> None:
    result = alice("run", "--", "sh", "-c", "echo out; echo err >&2; echo more")
    assert result.returncode == 0
    assert result.stdout == b"out\nmore\n"
    assert result.stderr == b"err\n"


def test_stop_kills_a_running_job_and_prints_its_final_status(alice: Client) -> None:
    job_id = alice.start("sleep", "1000")
    result = alice("stop", job_id)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.count(b"\n") == 1
    status = json.loads(result.stdout)
    assert status["stopped"] is True
    assert status["killed"] is True
    assert status["signal_name"] == "SIGKILL"
    assert status["state"] == "JOB_STATE_STOPPED"
    assert "exit_code" not in status


async def test_stop_with_grace_lets_a_job_that_traps_sigterm_exit_0(alice: Client) -> None:
    job_id = alice.start("sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 1000 & wait")
    with trio.fail_after(15):
        async with process(alice.argv("log", job_id)) as log:
            assert log.stdout is not None
            await read_until(log.stdout, bytearray(), b"ready\n")  # the trap is installed
            result = await trio.run_process(
                alice.argv("stop", "--grace", "5", job_id), capture_stdout=True, check=False
            )
            assert await log.wait() == 0
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["stopped"] is True
    assert status["killed"] is False
    assert status["exit_code"] == 0


def test_rund_environment_variables_replace_the_connection_flags(
    daemon: Daemon, pki: Pki, workdir: Path
) -> None:
    env = clean_env(
        RUND_ADDR=daemon.addr,
        RUND_CA=str(pki.ca),
        RUND_CERT=str(pki.cert("alice")),
        RUND_KEY=str(pki.key("alice")),
    )
    result = rund("client", "run", "--", "echo", "via env", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"via env\n"


def test_default_tls_paths_are_tls_under_the_working_directory(pki: Pki, tmp_path: Path) -> None:
    """``serve`` and ``client`` without --ca/--cert/--key read tls/*.pem; ``certs``
    without --out completes tls/ with a client signed by the CA already there."""
    (tmp_path / "tls").mkdir(mode=0o700)
    for name in ("ca", "server"):
        for path in (pki.cert(name), pki.key(name)):
            shutil.copy2(path, tmp_path / "tls" / path.name)
    certs = rund("certs", cwd=tmp_path)
    assert certs.returncode == 0, certs.stderr.decode()
    lines = set(certs.stdout.decode().splitlines())
    kept = {
        f"kept {line.removeprefix('wrote ')} (exists)"
        for line in written_lines(Path("tls"), ("ca", "server"))
    }
    assert lines == kept | written_lines(Path("tls"), ("client",))

    with running_daemon([], cwd=tmp_path) as daemon:
        result = rund(
            "client", "run", "--addr", daemon.addr, "--", "echo", "defaults", cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"defaults\n"

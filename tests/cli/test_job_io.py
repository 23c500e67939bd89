"""-e/--env-file, -w, -i and -t through the CLI as a user types them; the
terminal tests drive the client through a real pseudo-terminal (pexpect)."""

from __future__ import annotations

import json
import signal
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.cli.conftest import Client, Daemon, Pki, clean_env, running_daemon

TIMEOUT = 20


def run_with_stdin(client: Client, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        client.argv("run", *args),
        cwd=client.cwd,
        env=clean_env(),
        input=data,
        capture_output=True,
        timeout=TIMEOUT,
    )


def test_run_with_env_flags_and_env_file(alice: Client, tmp_path: Path) -> None:
    env_file = tmp_path / "job.env"
    env_file.write_text("# settings\nA=from-file\nB=2\n")
    result = alice(
        "run", "-e", "A=from-flag", "--env-file", str(env_file), "--", "sh", "-c", 'echo "$A $B"'
    )
    assert (result.returncode, result.stdout) == (0, b"from-flag 2\n"), result.stderr


def test_run_dash_e_name_alone_takes_the_clients_value(alice: Client) -> None:
    result = subprocess.run(
        alice.argv("run", "-e", "RUND_TEST_VALUE", "--", "sh", "-c", 'echo "$RUND_TEST_VALUE"'),
        cwd=alice.cwd,
        env=clean_env(RUND_TEST_VALUE_X="no") | {"RUND_TEST_VALUE": "from the client"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert result.stdout == b"from the client\n", result.stderr


def test_run_does_not_leak_the_clients_environment(alice: Client) -> None:
    result = subprocess.run(
        alice.argv("run", "--", "sh", "-c", 'echo "[$SECRET_TOKEN]"'),
        cwd=alice.cwd,
        env=clean_env(SECRET_TOKEN="hunter2"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert result.stdout == b"[]\n"


def test_run_with_workdir_starts_there(alice: Client, job_visible_dir: Path) -> None:
    result = alice("run", "-w", str(job_visible_dir), "--", "pwd")
    assert result.stdout == f"{job_visible_dir}\n".encode()


def test_run_with_a_workdir_that_is_a_file_says_so_in_one_line(
    alice: Client, tmp_path: Path
) -> None:
    file = tmp_path / "file"
    file.write_text("")
    result = alice("run", "-w", str(file), "--", "pwd")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1 and "FAILED_PRECONDITION" in lines[0] and str(file) in lines[0]


def test_run_without_i_says_a_piped_stdin_is_not_sent(alice: Client) -> None:
    result = run_with_stdin(alice, b"hi\n", "--", "cat")
    assert (result.returncode, result.stdout) == (0, b"")
    assert b"stdin is not sent" in result.stderr and b"-i" in result.stderr


def test_run_i_streams_stdin_to_the_job_until_end_of_file(alice: Client) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    result = run_with_stdin(alice, data, "-i", "--", "sh", "-c", "cat; echo end")
    assert result.returncode == 0, result.stderr
    assert result.stdout == data + b"end\n"
    assert result.stderr == b""


def test_start_i_then_input_feeds_the_job(alice: Client) -> None:
    started = alice("start", "-i", "--", "sh", "-c", "read line; echo got $line")
    job_id = started.stdout.decode().strip()
    fed = subprocess.run(
        alice.argv("input", job_id),
        cwd=alice.cwd,
        env=clean_env(),
        input=b"hello\n",
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert fed.returncode == 0, fed.stderr
    assert alice("log", job_id).stdout == b"got hello\n"


def test_input_to_a_job_started_without_i_is_refused_clearly(alice: Client) -> None:
    job_id = alice.start("sleep", "30")
    fed = subprocess.run(
        alice.argv("input", job_id),
        cwd=alice.cwd,
        env=clean_env(),
        input=b"x",
        capture_output=True,
        timeout=TIMEOUT,
    )
    alice("stop", job_id)
    assert fed.returncode == 1
    assert b"FAILED_PRECONDITION" in fed.stderr and b"start it with -i" in fed.stderr


def test_run_it_needs_a_terminal_on_stdin(alice: Client) -> None:
    result = run_with_stdin(alice, b"", "-it", "--", "true")
    assert result.returncode == 1
    assert b"needs a terminal on stdin" in result.stderr


def spawn_client(client: Client, *args: str, rows: int = 24, cols: int = 80) -> pexpect.spawn:
    argv = client.argv("run", *args)
    return pexpect.spawn(
        argv[0],
        argv[1:],
        cwd=str(client.cwd),
        env=clean_env(TERM="xterm"),
        dimensions=(rows, cols),
        timeout=TIMEOUT,
    )


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return int(child.exitstatus)


PROFILES = pytest.mark.parametrize("profile", [[], ["--host"]], ids=["contained", "host"])
"""A contained job (the default: its own /dev and devpts) and a host job."""


@pytest.fixture(scope="module")
def daemon(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """This module's daemon lets alice run host jobs too (``client --host``)."""
    args = [*pki.server_args(), "--allow-host-jobs", "DNS:alice"]
    with running_daemon(args, cwd=tmp_path_factory.mktemp("daemon")) as running:
        yield running


@PROFILES
def test_run_it_gives_an_interactive_shell(alice: Client, profile: list[str]) -> None:
    """The README's ``client run -it -- bash``: a shell on a terminal whose
    name exists in the job (a contained job's is its own /dev/pts/0)."""
    child = spawn_client(alice, *profile, "-it", "--", "sh", "-i")
    child.expect(r"[#$] ")
    child.sendline('tty && test "$(tty)" -ef /dev/stdin && echo same-$((1 + 1)); echo $((6 * 7))')
    child.expect(r"/dev/pts/0" if not profile else r"/dev/pts/\d+")
    child.expect("same-2")
    child.expect("42")
    child.expect(r"[#$] ")
    child.sendline("exit 7")
    assert finish(child) == 7


def test_run_it_tty_prints_the_contained_jobs_own_terminal(alice: Client) -> None:
    """The README's ``client run -it -- tty``."""
    child = spawn_client(alice, "-it", "--", "tty")
    child.expect("/dev/pts/0\r\n")
    assert finish(child) == 0


@PROFILES
def test_ctrl_c_in_an_interactive_shell_interrupts_its_foreground_command(
    alice: Client, profile: list[str]
) -> None:
    child = spawn_client(alice, *profile, "-it", "--", "sh", "-i")
    child.expect(r"[#$] ")
    # Once it says so, the command is the terminal's foreground process group.
    child.sendline("sh -c 'echo sleep-$((1 + 1))-started; exec sleep 300'")
    child.expect("sleep-2-started")  # not the command's echo
    child.sendcontrol("c")
    child.expect(r"[#$] ")  # the shell survived, with its prompt back
    child.sendline("echo status-$?")
    child.expect("status-130")
    child.sendline("exit")
    assert finish(child) == 0


@PROFILES
def test_an_interactive_shell_sees_the_new_window_size_after_a_resize(
    alice: Client, profile: list[str]
) -> None:
    child = spawn_client(alice, *profile, "-it", "--", "sh", "-i", cols=80)
    child.expect(r"[#$] ")
    child.sendline("stty size")
    child.expect("24 80")
    child.expect(r"[#$] ")
    child.setwinsize(30, 123)  # the client sends a Resize, apart from the input
    # The next command may run before the Resize lands: it waits for it.
    child.sendline('until [ "$(stty size)" = "30 123" ]; do :; done; echo cols-$(tput cols)')
    child.expect("cols-123")
    child.sendline("exit")
    assert finish(child) == 0


def test_ctrl_d_at_an_interactive_shells_prompt_ends_it(alice: Client) -> None:
    child = spawn_client(alice, "-it", "--", "sh", "-i")
    child.expect(r"[#$] ")
    child.sendline("true")
    child.expect(r"[#$] ")
    child.sendcontrol("d")
    assert finish(child) == 0


def test_run_it_starts_with_the_clients_window_size(alice: Client) -> None:
    child = spawn_client(alice, "-it", "--", "stty", "size", rows=33, cols=101)
    child.expect("33 101")
    assert finish(child) == 0


def test_run_it_sends_the_new_size_on_a_resize(alice: Client) -> None:
    child = spawn_client(
        alice,
        "-it",
        "--",
        "sh",
        "-c",
        'trap "tput cols; exit 0" WINCH; echo ready; while :; do sleep 0.05; done',
        cols=80,
    )
    child.expect("ready")
    child.setwinsize(24, 123)  # the client gets SIGWINCH, the job then its own
    child.expect("123")
    assert finish(child) == 0


def test_ctrl_c_in_run_it_interrupts_the_job(alice: Client) -> None:
    child = spawn_client(alice, "-it", "--", "sh", "-c", "echo ready; exec sleep 300")
    child.expect("ready")
    child.sendcontrol("c")
    assert finish(child) == 130  # 128 + SIGINT: the job's end, not the client's


def terminal_mode_after_exit(child: pexpect.spawn) -> list[Any]:
    """The client's terminal settings once it exited (read through the
    master, which reports its slave's)."""
    child.expect(pexpect.EOF)
    mode = termios.tcgetattr(child.child_fd)
    child.close()
    return mode


def test_run_it_puts_the_terminal_in_raw_mode_and_restores_it(alice: Client) -> None:
    child = spawn_client(alice, "-it", "--", "sh", "-c", "echo ready; read line")
    before = termios.tcgetattr(child.child_fd)
    child.expect("ready")
    during = termios.tcgetattr(child.child_fd)
    child.sendline("")
    after = terminal_mode_after_exit(child)
    assert during[3] & termios.ICANON == 0 and during[3] & termios.ECHO == 0
    assert after == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_run_it_ended_by_a_signal_restores_the_terminal(alice: Client, signum: int) -> None:
    child = spawn_client(alice, "-it", "--", "sh", "-c", "echo ready; exec sleep 300")
    before = termios.tcgetattr(child.child_fd)
    child.expect("ready")
    child.kill(signum)
    assert terminal_mode_after_exit(child) == before


def test_attach_feeds_a_terminal_job_started_with_it(alice: Client) -> None:
    started = alice("start", "-it", "--", "sh", "-c", "echo ready; read line; echo got $line")
    job_id = started.stdout.decode().strip()
    argv = alice.argv("attach", job_id)
    child = pexpect.spawn(
        argv[0], argv[1:], cwd=str(alice.cwd), env=clean_env(TERM="xterm"), timeout=TIMEOUT
    )
    child.expect("ready")  # replayed from the job's start
    child.sendline("hi")
    child.expect("got hi")
    assert finish(child) == 0


def spawn_attach(client: Client, *args: str) -> pexpect.spawn:
    argv = client.argv("attach", *args)
    return pexpect.spawn(
        argv[0], argv[1:], cwd=str(client.cwd), env=clean_env(TERM="xterm"), timeout=TIMEOUT
    )


def job_state(client: Client, job_id: str) -> str:
    status = json.loads(client("status", job_id).stdout)
    return str(status["state"])


def test_ctrl_p_ctrl_q_detaches_from_attach_and_the_job_runs_on(alice: Client) -> None:
    started = alice("start", "-it", "--", "sh", "-c", "echo ready; read line; echo got $line")
    job_id = started.stdout.decode().strip()
    child = spawn_attach(alice, job_id)
    child.expect("ready")
    child.send("typed-before")
    child.sendcontrol("p")
    child.sendcontrol("q")
    child.expect(f"detached from job {job_id}")
    assert finish(child) == 0
    assert job_state(alice, job_id) == "JOB_STATE_RUNNING"
    again = spawn_attach(alice, job_id)
    again.expect("ready")  # replayed from the start
    again.sendline("-and-after")
    again.expect("got typed-before-and-after")  # the bytes before the keys were sent
    assert finish(again) == 0


def test_detach_keys_can_be_chosen_and_a_partial_sequence_is_typed(alice: Client) -> None:
    started = alice("start", "-it", "--", "sh", "-c", "echo ready; read line; echo got $line")
    job_id = started.stdout.decode().strip()
    child = spawn_attach(alice, "--detach-keys", "ctrl-a,x", job_id)
    child.expect("ready")
    child.sendcontrol("p")  # docker's first key means nothing here: typed
    child.send("z")
    child.sendcontrol("a")
    child.send("y")  # not the sequence: both keys are typed
    child.sendcontrol("a")
    child.send("x")
    child.expect(f"detached from job {job_id}")
    assert finish(child) == 0
    again = spawn_attach(alice, "--detach-keys", "", job_id)
    again.expect("ready")
    again.sendline("")
    again.expect("got \x10z\x01y")
    assert finish(again) == 0


def test_ctrl_p_ctrl_q_detaches_from_run_it_and_the_job_runs_on(alice: Client) -> None:
    child = spawn_client(alice, "-it", "--", "sh", "-c", "echo ready; read line; echo got $line")
    child.expect("ready")
    child.send("before")
    child.sendcontrol("p")
    child.sendcontrol("q")
    child.expect(r"detached from job (\w+), which runs on")
    job_id = child.match.group(1).decode()
    assert finish(child) == 0
    assert job_state(alice, job_id) == "JOB_STATE_RUNNING"
    again = spawn_attach(alice, job_id)
    again.expect("ready")
    again.sendline("-after")
    again.expect("got before-after")
    assert finish(again) == 0


def test_attach_help_documents_the_detach_keys(alice: Client) -> None:
    result = alice("attach", "--help")
    text = " ".join(result.stdout.decode().split())
    assert "Ctrl-P Ctrl-Q detaches (exit 0, the job runs on)" in text
    assert "--detach-keys KEYS" in text and "default ctrl-p,ctrl-q" in text


def test_a_bad_detach_key_is_refused_before_connecting(alice: Client) -> None:
    result = alice("attach", "--detach-keys", "ctrl-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert result.returncode == 2
    assert b"'ctrl-1': ctrl- takes one of a-z" in result.stderr


def test_attach_to_a_job_without_stdin_only_follows_it(alice: Client) -> None:
    job_id = alice.start("sh", "-c", "echo out; exit 4")
    result = subprocess.run(
        alice.argv("attach", job_id),
        cwd=alice.cwd,
        env=clean_env(),
        input=b"ignored",
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert (result.returncode, result.stdout) == (4, b"out\n")

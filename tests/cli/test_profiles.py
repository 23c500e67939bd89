"""Job profiles through the command line: ``serve --allow-host-jobs`` and
``--default-profile``, ``client start|run --host``, the profile in ``status``."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Client, Pki, rund, running_daemon
from tests.cli.test_client import status_of, wait_for_end
from tests.cli.test_errors import assert_one_line_error


def no_new_privs(client: Client, *flags: str) -> str:
    result = client("run", *flags, "--", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr.decode()
    fields = dict(line.split(":", 1) for line in result.stdout.decode().splitlines())
    return fields["NoNewPrivs"].strip()


def test_status_says_a_job_ran_contained(alice: Client) -> None:
    job_id = alice("start", "--", "true").stdout.decode().strip()
    wait_for_end(alice, job_id)
    assert status_of(alice, job_id)["profile"] == "JOB_PROFILE_CONTAINED"


def test_run_host_without_a_grant_is_one_line_permission_denied(alice: Client) -> None:
    result = alice("run", "--host", "--", "true")
    assert_one_line_error(result, "PERMISSION_DENIED", "host jobs", "--allow-host-jobs")


def test_a_granted_client_runs_a_host_job_with_host(pki: Pki, tmp_path: Path) -> None:
    with running_daemon([*pki.server_args(), "--allow-host-jobs", "DNS:ali*"], cwd=tmp_path) as d:
        alice, bob = Client(d, pki, "alice", tmp_path), Client(d, pki, "bob", tmp_path)
        assert no_new_privs(alice, "--host") == "0"
        assert no_new_privs(alice) == "1"  # contained unless asked
        assert_one_line_error(bob("run", "--host", "--", "true"), "PERMISSION_DENIED")


def test_default_profile_host_gives_every_job_the_daemons_powers(pki: Pki, tmp_path: Path) -> None:
    with running_daemon([*pki.server_args(), "--default-profile", "host"], cwd=tmp_path) as d:
        bob = Client(d, pki, "bob", tmp_path)
        assert no_new_privs(bob) == "0"
        job_id = bob("start", "--", "true").stdout.decode().strip()
        wait_for_end(bob, job_id)
        assert status_of(bob, job_id)["profile"] == "JOB_PROFILE_HOST"


def test_serve_with_a_host_job_pattern_without_a_kind_is_refused(pki: Pki, tmp_path: Path) -> None:
    result = rund("serve", *pki.server_args(), "--allow-host-jobs", "*", cwd=tmp_path)
    assert result.returncode == 2
    assert b"--allow-host-jobs '*': write KIND:PATTERN" in result.stderr
    assert b"Traceback" not in result.stderr


def test_serve_without_namespaces_needs_the_host_profile(pki: Pki, tmp_path: Path) -> None:
    result = rund("serve", *pki.server_args(), "--no-namespaces", cwd=tmp_path)
    assert result.returncode == 1
    assert b"--no-namespaces cannot contain jobs" in result.stderr
    assert b"--default-profile host" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_granted_host_job_is_outside_the_user_namespace_a_contained_one_is_in(
    pki: Pki, tmp_path: Path
) -> None:
    with running_daemon([*pki.server_args(), "--allow-host-jobs", "DNS:alice"], cwd=tmp_path) as d:
        alice = Client(d, pki, "alice", tmp_path)
        host = alice("run", "--host", "--", "cat", "/proc/self/uid_map")
        contained = alice("run", "--", "cat", "/proc/self/uid_map")
        assert host.stdout.split() == [b"0", b"0", b"4294967295"]
        assert contained.stdout.split()[:2] == [b"0", b"2147418112"], contained.stderr

"""``client log`` options and the order of stdout and stderr, as a user types them."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from tests.cli.conftest import Client, rund
from tests.cli.test_client import process, read_until, wait_for_end

STAMPED_LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)")


def finished_job(client: Client, script: str) -> str:
    job_id = client.start("sh", "-c", script)
    wait_for_end(client, job_id)
    return job_id


def test_run_keeps_the_order_the_job_wrote_stdout_and_stderr_in(alice: Client) -> None:
    script = "echo o1; sleep 0.3; echo e1 >&2; sleep 0.3; echo o2"
    result = subprocess.run(
        alice.argv("run", "--", "sh", "-c", script),
        cwd=alice.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=20,
    )
    assert result.stdout == b"o1\ne1\no2\n"


def test_tail_writes_the_last_lines_of_both_streams_in_order(alice: Client) -> None:
    job_id = finished_job(alice, "echo 1; sleep 0.3; echo 2 >&2; sleep 0.3; echo 3")
    result = subprocess.run(
        alice.argv("log", "--tail", "2", job_id),
        cwd=alice.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=20,
    )
    assert (result.returncode, result.stdout) == (0, b"2\n3\n")


def test_tail_0_writes_nothing_of_a_finished_job(alice: Client) -> None:
    job_id = finished_job(alice, "echo 1")
    result = alice("log", "--tail", "0", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


async def test_no_follow_writes_what_is_recorded_and_exits_while_the_job_runs(
    alice: Client,
) -> None:
    job_id = alice.start("sh", "-c", "echo first; exec sleep 600")
    with trio.fail_after(15):
        async with process(alice.argv("log", job_id)) as follower:
            assert follower.stdout is not None
            await read_until(follower.stdout, bytearray(), b"first\n")
    result = alice("log", "--no-follow", job_id)
    assert (result.returncode, result.stdout) == (0, b"first\n")
    assert alice("stop", job_id).returncode == 0


def test_timestamps_prefix_each_line_with_its_recorded_time(alice: Client) -> None:
    before = datetime.now(UTC)
    job_id = finished_job(alice, "printf 'a\\nb\\n'; printf 'c\\n' >&2; printf 'no newline'")
    after = datetime.now(UTC)
    result = alice("log", "--timestamps", job_id)
    assert result.returncode == 0
    out, err = result.stdout.split(b"\n"), result.stderr.split(b"\n")
    assert len(out) == 3 and len(err) == 2 and err[1] == b""
    stamped = [STAMPED_LINE.fullmatch(line) for line in (*out, err[0])]
    assert all(stamped), result
    assert [m.group(2) for m in stamped if m] == [b"a", b"b", b"no newline", b"c"]
    for match in stamped:
        assert match is not None
        when = datetime.fromisoformat(match.group(1).decode()[:26] + "+00:00")
        assert before - timedelta(seconds=1) <= when <= after


def test_since_a_duration_covers_a_job_that_just_ran(alice: Client) -> None:
    job_id = finished_job(alice, "echo recent")
    assert alice("log", "--since", "10m", job_id).stdout == b"recent\n"


def test_since_a_time_after_the_output_writes_nothing(alice: Client) -> None:
    job_id = finished_job(alice, "echo old")
    later = datetime.now(UTC).isoformat()
    result = alice("log", "--since", later, job_id)
    assert (result.returncode, result.stdout) == (0, b"")


def test_since_an_rfc3339_time_before_the_output_writes_it(alice: Client) -> None:
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    job_id = finished_job(alice, "echo hello")
    assert alice("log", "--since", earlier, job_id).stdout == b"hello\n"


def test_a_negative_tail_is_refused_before_anything_is_sent(workdir: Path) -> None:
    result = rund("client", "log", "--addr", "127.0.0.1:1", "--tail", "-1", "X", cwd=workdir)
    assert result.returncode == 2
    assert "argument --tail: -1 lines: ask for 0 or more" in result.stderr.decode()


def test_since_in_the_future_is_refused_before_anything_is_sent(workdir: Path) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    result = rund("client", "log", "--addr", "127.0.0.1:1", "--since", future, "X", cwd=workdir)
    assert result.returncode == 2
    assert "is in the future" in result.stderr.decode()


def test_since_that_is_neither_a_time_nor_a_duration_is_refused(workdir: Path) -> None:
    result = rund(
        "client", "log", "--addr", "127.0.0.1:1", "--since", "yesterday", "X", cwd=workdir
    )
    assert result.returncode == 2
    assert "is neither a time (RFC 3339" in result.stderr.decode()


def test_log_help_lists_the_options(workdir: Path) -> None:
    out = rund("client", "log", "--help", cwd=workdir).stdout.decode()
    for flag in ("--no-follow", "--tail N", "--since TIME", "--timestamps"):
        assert flag in out


assert os  # the module's imports are all used by the tests above

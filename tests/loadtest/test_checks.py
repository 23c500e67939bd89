"""The load test's judgement of what a subscriber received."""

from __future__ import annotations

import subprocess

from loadtest.checks import FinalStatus, JobPlan, Received, numbered_lines, violations

PLAN = JobPlan(index=7, stdout=15, stderr=4, long=False)
STDOUT = b"o7-1\no7-2\no7-3\n"
STDERR = b"e7-1"
EXITED = FinalStatus("exited", 0, output_bytes=19, dropped_bytes=0)


def received(stdout: bytes, stderr: bytes, end: str = "OK") -> Received:
    got = Received(end=end)
    got.add(stdout, stderr)
    return got


def test_the_expected_output_is_what_the_job_writes() -> None:
    written = subprocess.run(PLAN.argv(), capture_output=True, check=True)
    assert (written.stdout, written.stderr) == (STDOUT, STDERR)
    assert (numbered_lines("o7", 15), numbered_lines("e7", 4)) == (STDOUT, STDERR)


def test_exactly_what_the_job_wrote_is_no_violation() -> None:
    assert violations(PLAN, received(STDOUT, STDERR), EXITED) == []


def test_a_chunk_received_twice_is_a_violation() -> None:
    got = received(b"o7-1\n", STDERR)
    got.add(b"o7-1\n", b"")
    assert "job 7: stdout is not the first 10 bytes the job wrote" in violations(PLAN, got, EXITED)


def test_bytes_missing_from_the_middle_are_a_violation() -> None:
    got = received(b"o7-1\no7-3\n", STDERR)  # "o7-2\n" never arrived
    assert "job 7: stdout is not the first 10 bytes the job wrote" in violations(PLAN, got, EXITED)


def test_bytes_missing_from_the_end_are_a_violation() -> None:
    got = received(b"o7-1\no7-2\n", STDERR)
    assert "job 7: received 14 bytes, the daemon recorded 19" in violations(PLAN, got, EXITED)


def test_dropped_output_with_a_log_that_ended_ok_is_a_violation() -> None:
    capped = FinalStatus("exited", 0, output_bytes=8, dropped_bytes=11)
    assert violations(PLAN, received(b"o7-1\no7-", b""), capped) == [
        "job 7: 11 bytes were dropped but the Log ended OK"
    ]
    assert violations(PLAN, received(b"o7-1\no7-", b"", "RESOURCE_EXHAUSTED"), capped) == []


def test_a_stopped_job_may_have_written_a_prefix_only() -> None:
    long = JobPlan(index=7, stdout=15, stderr=4, long=True)
    stopped = FinalStatus("stopped", None, output_bytes=5, dropped_bytes=0)
    assert violations(long, received(b"o7-1\n", b""), stopped) == []

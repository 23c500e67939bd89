"""``rund-trio client ps``, ``wait``, ``rm`` and ``prune``, and ``run``'s
graceful stop, against a daemon subprocess as a user types them."""

from __future__ import annotations

import json
import secrets
import signal

import trio

from tests.cli.conftest import Client
from tests.cli.test_client import process, read_to_end, read_until
from tests.cli.test_errors import assert_one_line_error

HEADER = ["ID", "COMMAND", "STATE", "EXIT", "STARTED", "DURATION"]


def ok(result: object) -> str:
    assert result.returncode == 0, result.stderr.decode()  # type: ignore[attr-defined]
    return result.stdout.decode()  # type: ignore[attr-defined]


def ended(client: Client, *command: str) -> str:
    job_id = client.start(*command)
    result = client("wait", job_id)
    assert result.stderr == b"" and result.stdout.strip().isdigit()
    return job_id


def rows(table: str) -> dict[str, list[str]]:
    """The rows of a ``ps`` table by job id, each as its columns (the command
    column may hold spaces: it is everything between the id and the state)."""
    lines = table.splitlines()
    assert lines[0].split() == HEADER
    parsed = {}
    for line in lines[1:]:
        words = line.split()
        # ID COMMAND... STATE EXIT DATE TIME DURATION
        parsed[words[0]] = [words[0], " ".join(words[1:-5]), *words[-5:-3], *words[-2:]]
    return parsed


def test_ps_shows_running_jobs_only_and_ps_a_shows_ended_ones_too(alice: Client) -> None:
    done = ended(alice, "sh", "-c", "exit 3")
    running = alice.start("sleep", "300")
    default = rows(ok(alice("ps")))
    everything = rows(ok(alice("ps", "-a")))
    assert running in default and done not in default
    assert default[running][1:4] == ["sleep 300", "running", "-"]
    assert everything[done][1:4] == ["sh -c 'exit 3'", "exited", "3"]
    assert list(everything).index(running) < list(everything).index(done), "newest first"
    ok(alice("rm", "-f", running))


def test_ps_q_prints_only_ids_and_json_one_object_per_line(alice: Client) -> None:
    job_id = ended(alice, "true")
    quiet = ok(alice("ps", "-a", "-q")).split("\n")
    assert job_id in quiet
    objects = [json.loads(line) for line in ok(alice("ps", "-a", "--json")).splitlines()]
    (mine,) = [obj for obj in objects if obj["ulid"] == job_id]
    assert (mine["state"], mine["exit_code"], mine["name"]) == ("JOB_STATE_EXITED", 0, "true")


def test_ps_shows_a_stranger_none_of_alices_jobs(alice: Client, bob: Client) -> None:
    job_id = ended(alice, "true")
    assert job_id not in ok(bob("ps", "-a"))
    assert job_id not in ok(bob("ps", "-a", "-q"))


def test_wait_prints_each_exit_code_and_exits_with_the_last(alice: Client) -> None:
    first = alice.start("sh", "-c", "exit 2")
    second = alice.start("sh", "-c", "sleep 0.2; kill -TERM $$")
    result = alice("wait", first, second)
    assert result.stdout == b"2\n143\n"
    assert result.returncode == 128 + signal.SIGTERM


def test_wait_for_a_strangers_job_is_the_one_line_not_found(alice: Client, bob: Client) -> None:
    job_id = ended(alice, "true")
    assert_one_line_error(bob("wait", job_id), f"job {job_id} not found")


def test_rm_forgets_ended_jobs_and_refuses_a_running_one_unless_forced(alice: Client) -> None:
    done = ended(alice, "true")
    running = alice.start("sleep", "300")
    assert ok(alice("rm", done)) == f"{done}\n"
    refused = alice("rm", running)
    assert_one_line_error(refused, "is still running: stop it first, or remove it with force")
    assert ok(alice("rm", "-f", running)) == f"{running}\n"
    assert_one_line_error(alice("status", done), f"job {done} not found")
    assert running not in ok(alice("ps", "-a", "-q"))


def test_rm_of_a_malformed_id_is_one_line(alice: Client) -> None:
    assert_one_line_error(alice("rm", "nonsense"), "'nonsense' is not a valid job id")


def test_prune_forgets_every_ended_job_and_no_running_one(alice: Client) -> None:
    done = [ended(alice, "true") for _ in range(3)]
    running = alice.start("sleep", "300")
    pruned = ok(alice("prune")).split()
    assert set(done) <= set(pruned) and running not in pruned
    assert ok(alice("ps", "-a", "-q")).split() == [running]
    ok(alice("rm", "-f", running))


def test_prune_older_than_keeps_recent_jobs(alice: Client) -> None:
    job_id = ended(alice, "true")
    assert ok(alice("prune", "--older-than", "1h")) == ""
    assert job_id in ok(alice("ps", "-a", "-q"))


def test_prune_refuses_a_malformed_duration(alice: Client) -> None:
    result = alice("prune", "--older-than", "soon")
    assert result.returncode == 2
    assert b"'soon' is not a duration" in result.stderr


async def test_a_second_sigint_kills_a_job_that_ignores_sigterm_at_once(alice: Client) -> None:
    marker = str(secrets.randbelow(10**9) + 10**9)
    argv = alice.argv(
        "run", "--grace", "600", "--",
        "sh", "-c", f"trap 'echo ignored' TERM; echo ready; while :; do sleep 0.1; done # {marker}",
    )  # fmt: skip
    with trio.fail_after(30):
        async with process(argv) as run:
            assert run.stdout is not None and run.stderr is not None
            out = bytearray()
            await read_until(run.stdout, out, b"ready\n")
            run.send_signal(signal.SIGINT)
            await read_until(run.stdout, out, b"ignored\n")
            run.send_signal(signal.SIGINT)
            stderr = (await read_to_end(run.stderr)).decode()
            code = await run.wait()
    # (the job's own stderr comes through too: its sleep, SIGTERMed, is reported)
    lines = [line for line in stderr.splitlines() if line.startswith("rund-trio:")]
    assert len(lines) == 2, stderr
    assert lines[0].startswith("rund-trio: SIGINT: stopping job ")
    assert lines[1].startswith("rund-trio: killing job ")
    assert code == 128 + signal.SIGKILL, stderr


async def test_a_hangup_stops_the_job_gracefully(alice: Client) -> None:
    argv = alice.argv(
        "run", "--", "sh", "-c", "trap 'echo bye; exit 5' TERM; echo ready; sleep 600 & wait"
    )
    with trio.fail_after(30):
        async with process(argv) as run:
            assert run.stdout is not None and run.stderr is not None
            out = bytearray()
            await read_until(run.stdout, out, b"ready\n")
            run.send_signal(signal.SIGHUP)
            out += await read_to_end(run.stdout)
            code = await run.wait()
    assert out == b"ready\nbye\n"
    assert code == 5

"""The supervisor's behaviour, driven by fake processes under trio's autojump
clock: every timing here is exact and no test waits for real time."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import (
    JobNotFound,
    PermissionDenied,
    ResourceExhausted,
    SpawnError,
    Unsupported,
)
from rund_trio.jobs.spec import JobSpec
from rund_trio.jobs.state import JobState
from rund_trio.jobs.supervisor import USAGE_MAX_AGE, Job, Supervisor, SupervisorConfig
from rund_trio.logs.journal import Piece, Stream
from rund_trio.logs.state_dir import journal_path
from rund_trio.tls.identity import Identity
from tests.fakes import FakeProcess, FakeSpawner, inline_store

ALICE = Identity.of("DNS:alice", "email:alice@example.com")
ALICE_LAPTOP = Identity.of("email:alice@example.com")
BOB = Identity.of("DNS:bob")
SPEC = JobSpec(argv=("worker", "--fast"))


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner()


@pytest.fixture
async def supervisor(
    nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(
        spawner,
        SupervisorConfig(state_dir=tmp_path, output_linger=1.0),
        store=inline_store(tmp_path),
    )
    await nursery.start(supervisor.run)
    yield supervisor


def process_of(job: Job) -> FakeProcess:
    assert isinstance(job.process, FakeProcess)
    return job.process


async def collect(supervisor: Supervisor, job: Job) -> list[Piece]:
    return [piece async for piece in supervisor.follow(job)]


def joined(pieces: list[Piece], stream: Stream) -> bytes:
    return b"".join(piece.data for piece in pieces if piece.stream is stream)


async def test_start_runs_the_command_with_its_argv_and_job_id_in_env(
    autojump_clock: MockClock,
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    assert process_of(job).spec.argv == ("worker", "--fast")
    assert process_of(job).spec.env["RUND_JOB_ID"] == job.job_id
    assert job.snapshot().state is JobState.RUNNING


async def test_start_refuses_a_caller_without_san(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    with pytest.raises(PermissionDenied, match="no subject alternative name"):
        await supervisor.start(SPEC, Identity())


async def test_start_refuses_limits_without_cgroup_support(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    with pytest.raises(Unsupported, match="memory_bytes"):
        await supervisor.start(JobSpec(argv=("x",), limits=Limits(memory_bytes=1 << 20)), ALICE)


async def test_spawn_failure_propagates_and_leaves_no_job(
    autojump_clock: MockClock, supervisor: Supervisor, spawner: FakeSpawner, tmp_path: Path
) -> None:
    spawner.fail_with = SpawnError("nope", 2, "No such file or directory")
    with pytest.raises(SpawnError, match="No such file or directory"):
        await supervisor.start(SPEC, ALICE)
    assert supervisor.jobs == {}
    assert list(tmp_path.glob("*.log")) == []


async def test_job_is_found_by_a_caller_sharing_a_san(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    assert supervisor.find(job.job_id, ALICE_LAPTOP) is job


async def test_job_is_not_found_by_a_stranger(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    with pytest.raises(JobNotFound) as stranger:
        supervisor.find(job.job_id, BOB)
    with pytest.raises(JobNotFound) as unknown:
        supervisor.find("01ARZ3NDEKTSV4RRFFQ69G5FAV", BOB)
    assert str(stranger.value).replace(job.job_id, "ID") == str(unknown.value).replace(
        "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ID"
    )


async def test_exit_code_is_reported_once_the_process_ends(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process_of(job).exit(3)
    await job.exited.wait()
    status = job.snapshot()
    assert (status.state, status.exit_code, status.killed, status.stopped) == (
        JobState.EXITED,
        3,
        False,
        False,
    )
    assert status.usage.user_time == 0.5
    assert status.ended_at is not None


async def test_a_running_jobs_usage_is_read_at_most_every_usage_max_age(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process_of(job).memory = 100
    assert job.snapshot().usage.memory_current == 100
    process_of(job).memory = 200
    assert job.snapshot().usage.memory_current == 100
    await trio.sleep(USAGE_MAX_AGE)
    assert job.snapshot().usage.memory_current == 200


async def test_a_signal_nobody_asked_for_is_reported_as_killed(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process_of(job).exit(signum=signal.SIGSEGV)
    await job.exited.wait()
    status = job.snapshot()
    assert (status.state, status.killed, status.signal_name, status.exit_code) == (
        JobState.KILLED,
        True,
        "SIGSEGV",
        None,
    )


async def test_stop_without_grace_kills_at_once(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    start = trio.current_time()
    status = await supervisor.stop(job)
    assert process_of(job).signals == [(signal.SIGKILL, start)]
    assert (status.stopped, status.killed, status.signal) == (True, True, signal.SIGKILL)


async def test_stop_with_grace_escalates_to_sigkill_after_exactly_the_grace_period(
    autojump_clock: MockClock, supervisor: Supervisor, spawner: FakeSpawner
) -> None:
    spawner.ignores_sigterm = True
    job = await supervisor.start(SPEC, ALICE)
    start = trio.current_time()
    status = await supervisor.stop(job, grace=5.0)
    assert process_of(job).signals == [(signal.SIGTERM, start), (signal.SIGKILL, start + 5.0)]
    assert status.state is JobState.STOPPED
    assert status.signal == signal.SIGKILL


async def test_stop_with_grace_needs_no_sigkill_when_sigterm_suffices(
    autojump_clock: MockClock,
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    status = await supervisor.stop(job, grace=5.0)
    assert [signum for signum, _ in process_of(job).signals] == [signal.SIGTERM]
    assert status.signal == signal.SIGTERM and status.stopped


async def test_stop_of_an_ended_job_leaves_its_status_unchanged(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process_of(job).exit(0)
    await job.exited.wait()
    before = job.snapshot()
    after = await supervisor.stop(job, grace=1.0)
    assert after == before
    assert not after.stopped and process_of(job).signals == []


async def test_stop_completes_even_if_its_caller_is_cancelled(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    with trio.move_on_after(0):
        await supervisor.stop(job)
    await job.exited.wait()
    assert job.snapshot().stopped


async def test_log_follower_gets_history_then_live_output_then_ends(
    autojump_clock: MockClock,
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process = process_of(job)
    await process.write_stdout(b"history ")
    await trio.sleep(1)
    got: list[Piece] = []

    async def subscriber() -> None:
        got.extend(await collect(supervisor, job))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscriber)
        await trio.sleep(1)
        await process.write_stdout(b"live")
        await process.write_stderr(b"oops")
        await trio.sleep(1)
        process.exit(0)
        await process.close_output()
    assert joined(got, Stream.STDOUT) == b"history live"
    assert joined(got, Stream.STDERR) == b"oops"


async def test_log_fans_out_to_many_subscribers_late_slow_and_cancelled(
    autojump_clock: MockClock,
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process = process_of(job)
    expected = b"".join(b"line %d\n" % i for i in range(200))
    results: dict[str, bytes] = {}

    async def subscriber(name: str, delay_per_chunk: float) -> None:
        out = bytearray()
        async for piece in supervisor.follow(job):
            out += piece.data
            await trio.sleep(delay_per_chunk)
        results[name] = bytes(out)

    async def cancelled_subscriber() -> None:
        with trio.move_on_after(0.5):
            async for _ in supervisor.follow(job):
                pass
        results["cancelled"] = b"gone"

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(subscriber, f"fast{i}", 0)
        nursery.start_soon(subscriber, "slow", 30.0)
        nursery.start_soon(cancelled_subscriber)
        for i in range(200):
            await process.write_stdout(b"line %d\n" % i)
            await trio.sleep(0.01)
        process.exit(0)
        await process.close_output()
        await job.exited.wait()
        nursery.start_soon(subscriber, "late", 0)
    assert results.pop("cancelled") == b"gone"
    assert results == {name: expected for name in results}
    assert set(results) == {*(f"fast{i}" for i in range(20)), "slow", "late"}


async def test_output_still_open_after_exit_is_abandoned_after_the_linger(
    autojump_clock: MockClock,
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    process = process_of(job)
    await process.write_stdout(b"before exit")
    exited_at = trio.current_time()
    process.exit(0)  # an escaped descendant still holds the pipes open
    pieces = await collect(supervisor, job)
    assert trio.current_time() == exited_at + 1.0
    assert joined(pieces, Stream.STDOUT) == b"before exit"


async def test_output_beyond_the_cap_is_dropped_and_counted(
    autojump_clock: MockClock, nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> None:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path, output_cap=10))
    await nursery.start(supervisor.run)
    job = await supervisor.start(SPEC, ALICE)
    process = process_of(job)
    await process.write_stdout(b"0123456789abcdef")
    process.exit(0)
    await process.close_output()
    pieces = await collect(supervisor, job)
    assert joined(pieces, Stream.STDOUT) == b"0123456789"
    status = job.snapshot()
    assert (status.output.recorded_bytes, status.output.dropped_bytes) == (10, 6)


async def test_shutdown_kills_and_reaps_every_job_and_keeps_their_records(
    autojump_clock: MockClock, spawner: FakeSpawner, tmp_path: Path
) -> None:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path))
    followers_done = 0

    async def follower(job: Job) -> None:
        nonlocal followers_done
        async for _ in supervisor.follow(job):
            pass
        followers_done += 1

    async with trio.open_nursery() as subscribers:
        supervisor_scope = trio.CancelScope()

        async def run_supervisor(*, task_status: trio.TaskStatus[None]) -> None:
            with supervisor_scope:
                await supervisor.run(task_status=task_status)

        await subscribers.start(run_supervisor)
        jobs = [await supervisor.start(SPEC, ALICE) for _ in range(5)]
        for job in jobs:
            subscribers.start_soon(follower, job)
        await trio.sleep(1)
        supervisor_scope.cancel()
    assert followers_done == 5
    for job in jobs:
        assert [signum for signum, _ in process_of(job).signals] == [signal.SIGKILL]
        assert process_of(job).closed
        assert job.snapshot().state is JobState.KILLED
    store = inline_store(tmp_path)
    for job in jobs:
        stored = store.find(job.job_id, ALICE.sans)
        assert stored is not None
        assert stored.snapshot.state is JobState.KILLED
        assert journal_path(tmp_path, job.job_id).exists()


async def test_start_during_shutdown_is_refused(
    autojump_clock: MockClock, spawner: FakeSpawner, tmp_path: Path
) -> None:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        nursery.cancel_scope.cancel()
    with pytest.raises(Exception, match="shutting down"):
        await supervisor.start(SPEC, ALICE)


async def test_starts_beyond_the_running_jobs_cap_are_refused_until_one_ends(
    autojump_clock: MockClock, nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> None:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path, max_running_jobs=2))
    await nursery.start(supervisor.run)
    first = await supervisor.start(SPEC, ALICE)
    await supervisor.start(SPEC, BOB)
    with pytest.raises(ResourceExhausted, match="2 running jobs"):
        await supervisor.start(SPEC, ALICE)
    await supervisor.stop(first)
    await supervisor.start(SPEC, ALICE)


async def test_a_client_at_its_running_jobs_cap_does_not_block_others(
    autojump_clock: MockClock, nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> None:
    config = SupervisorConfig(state_dir=tmp_path, max_running_jobs_per_client=1)
    supervisor = Supervisor(spawner, config)
    await nursery.start(supervisor.run)
    await supervisor.start(SPEC, ALICE)
    with pytest.raises(ResourceExhausted, match="the limit per client"):
        await supervisor.start(SPEC, ALICE)
    await supervisor.start(SPEC, BOB)


async def test_a_failed_start_does_not_count_against_the_cap(
    autojump_clock: MockClock, nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> None:
    config = SupervisorConfig(state_dir=tmp_path, max_running_jobs_per_client=1)
    supervisor = Supervisor(spawner, config)
    await nursery.start(supervisor.run)
    spawner.fail_with = SpawnError("nope", 2, "No such file or directory")
    with pytest.raises(SpawnError):
        await supervisor.start(SPEC, ALICE)
    spawner.fail_with = None
    await supervisor.start(SPEC, ALICE)


async def test_start_is_refused_once_the_output_total_is_reached(
    autojump_clock: MockClock, nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> None:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path, max_output_total=40))
    await nursery.start(supervisor.run)
    job = await supervisor.start(SPEC, ALICE)
    process = process_of(job)
    await process.write_stdout(b"0123456789abcdef0123456789")
    process.exit(0)
    await process.close_output()
    await collect(supervisor, job)
    with pytest.raises(ResourceExhausted, match="--max-output-total"):
        await supervisor.start(SPEC, ALICE)
    assert job.snapshot().output.error is not None
    assert len(supervisor.jobs) == 1

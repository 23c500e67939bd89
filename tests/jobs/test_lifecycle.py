"""The supervisor's job lifecycle beyond start and stop: Wait, Remove, List,
retention, and what a restart on the same state directory finds. Fake
processes under trio's autojump clock; the job database is real."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rund_trio.errors import FailedPrecondition, JobNotFound, ResourceExhausted
from rund_trio.jobs.spec import JobSpec
from rund_trio.jobs.state import JobState
from rund_trio.jobs.supervisor import EndedJob, Job, Supervisor, SupervisorConfig
from rund_trio.logs.journal import Piece, Stream
from rund_trio.logs.state_dir import journal_path
from rund_trio.tls.identity import Identity
from tests.fakes import FakeProcess, FakeSpawner, inline_store

ALICE = Identity.of("DNS:alice", "email:alice@example.com")
ALICE_LAPTOP = Identity.of("email:alice@example.com")
BOB = Identity.of("DNS:bob")
SPEC = JobSpec(argv=("worker",))


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def run_supervisor(
    nursery: trio.Nursery, spawner: FakeSpawner, state_dir: Path, clock: Clock, **config: object
) -> tuple[Supervisor, trio.CancelScope]:
    supervisor = Supervisor(
        spawner,
        SupervisorConfig(state_dir=state_dir, output_linger=0.1, **config),  # type: ignore[arg-type]
        now=clock,
        store=inline_store(state_dir),
    )
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await supervisor.run(task_status=task_status)

    await nursery.start(run)
    return supervisor, scope


@pytest.fixture
async def supervisor(
    nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path, clock: Clock
) -> AsyncIterator[Supervisor]:
    supervisor, _ = await run_supervisor(nursery, spawner, tmp_path, clock)
    yield supervisor


def process_of(job: Job) -> FakeProcess:
    assert isinstance(job.process, FakeProcess)
    return job.process


async def ended_job(supervisor: Supervisor, owner: Identity = ALICE, code: int = 0) -> str:
    job = await supervisor.start(SPEC, owner)
    process_of(job).exit(code)
    await supervisor.wait(job)
    return job.job_id


async def collect(supervisor: Supervisor, job_id: str, caller: Identity = ALICE) -> bytes:
    pieces: list[Piece] = [
        piece async for piece in supervisor.follow(supervisor.find(job_id, caller))
    ]
    return b"".join(piece.data for piece in pieces if piece.stream is Stream.STDOUT)


async def test_wait_returns_the_final_status_once_the_job_ended(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    results: list[JobState] = []

    async def waiter() -> None:
        results.append((await supervisor.wait(job)).state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(10)
        assert results == []
        process_of(job).exit(3)
    assert results == [JobState.EXITED]


async def test_an_ended_job_is_served_from_the_database_with_its_output(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    await process_of(job).write_stdout(b"hello\n")
    process_of(job).exit(3)
    await supervisor.wait(job)
    found = supervisor.find(job.job_id, ALICE_LAPTOP)
    assert isinstance(found, EndedJob)
    assert (found.snapshot().exit_code, found.snapshot().output.recorded_bytes) == (3, 6)
    assert (await supervisor.wait(found)).exit_code == 3
    assert await collect(supervisor, job.job_id) == b"hello\n"
    assert supervisor.jobs == {}


async def test_a_stranger_gets_the_not_found_of_an_unknown_id_for_an_ended_job(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job_id = await ended_job(supervisor)
    with pytest.raises(JobNotFound) as stranger:
        supervisor.find(job_id, BOB)
    with pytest.raises(JobNotFound) as unknown:
        supervisor.find("01ARZ3NDEKTSV4RRFFQ69G5FAV", BOB)
    assert str(stranger.value).replace(job_id, "ID") == str(unknown.value).replace(
        "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ID"
    )


async def test_remove_forgets_the_record_and_deletes_the_output(
    autojump_clock: MockClock, supervisor: Supervisor, tmp_path: Path
) -> None:
    job_id = await ended_job(supervisor)
    removed = await supervisor.remove(supervisor.find(job_id, ALICE))
    assert removed.state is JobState.EXITED
    with pytest.raises(JobNotFound):
        supervisor.find(job_id, ALICE)
    assert not journal_path(tmp_path, job_id).exists()


async def test_remove_of_a_running_job_is_refused_and_leaves_it_running(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    with pytest.raises(FailedPrecondition, match="still running"):
        await supervisor.remove(job)
    assert job.snapshot().state is JobState.RUNNING
    assert process_of(job).signals == []


async def test_forced_remove_kills_a_running_job_then_forgets_it(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    removed = await supervisor.remove(job, force=True)
    assert (removed.state, removed.signal) == (JobState.STOPPED, signal.SIGKILL)
    with pytest.raises(JobNotFound):
        supervisor.find(job.job_id, ALICE)


async def test_a_log_follower_of_a_job_removed_meanwhile_ends_cleanly(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    job = await supervisor.start(SPEC, ALICE)
    await process_of(job).write_stdout(b"before\n")
    pieces = supervisor.follow(job)
    assert (await anext(pieces)).data == b"before\n"
    await supervisor.remove(job, force=True)
    assert [piece async for piece in pieces] == []


async def test_a_second_stop_without_grace_ends_the_first_ones_grace_at_once(
    autojump_clock: MockClock, supervisor: Supervisor, spawner: FakeSpawner
) -> None:
    spawner.ignores_sigterm = True
    job = await supervisor.start(SPEC, ALICE)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.stop, job, 10.0)
        await trio.sleep(2)
        await supervisor.stop(job)
    assert process_of(job).signals == [(signal.SIGTERM, start), (signal.SIGKILL, start + 2)]


async def test_list_is_newest_first_only_the_callers_and_paged(
    autojump_clock: MockClock, supervisor: Supervisor
) -> None:
    alices = [await ended_job(supervisor) for _ in range(3)]
    await ended_job(supervisor, BOB)
    running = await supervisor.start(SPEC, ALICE_LAPTOP)
    everything = [s.job_id for s in supervisor.list(ALICE, None, None, 10)]
    assert everything == [running.job_id, *reversed(alices)]
    assert [s.job_id for s in supervisor.list(ALICE, False, None, 10)] == [running.job_id]
    assert [s.job_id for s in supervisor.list(ALICE, True, None, 10)] == alices[::-1]
    first = supervisor.list(ALICE, True, None, 2)
    rest = supervisor.list(ALICE, True, first[-1].job_id, 2)
    assert [s.job_id for s in first + rest] == alices[::-1]
    assert [s.job_id for s in supervisor.list(BOB, False, None, 10)] == []


async def test_retention_keeps_the_most_recently_ended_jobs(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    supervisor, _ = await run_supervisor(nursery, spawner, tmp_path, clock, retain_jobs=2)
    ids = []
    for _ in range(4):
        clock.now += timedelta(seconds=1)
        ids.append(await ended_job(supervisor))
    assert [s.job_id for s in supervisor.list(ALICE, None, None, 10)] == ids[:1:-1]
    assert sorted(p.stem for p in tmp_path.glob("*.log")) == sorted(ids[2:])


async def test_retention_forgets_jobs_ended_longer_ago_than_retain_for(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    supervisor, _ = await run_supervisor(nursery, spawner, tmp_path, clock, retain_for=3600.0)
    old = await ended_job(supervisor)
    clock.now += timedelta(minutes=59)
    recent = await ended_job(supervisor)
    clock.now += timedelta(minutes=2)
    await trio.sleep(61)  # the next sweep
    assert [s.job_id for s in supervisor.list(ALICE, None, None, 10)] == [recent]
    assert old != recent


async def test_forgetting_jobs_frees_the_output_total(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    supervisor, _ = await run_supervisor(
        nursery, spawner, tmp_path, clock, retain_for=3600.0, max_output_total=30
    )
    job = await supervisor.start(SPEC, ALICE)
    await process_of(job).write_stdout(b"x" * 25)  # with its 5-byte header: 30
    process_of(job).exit(0)
    await supervisor.wait(job)
    with pytest.raises(ResourceExhausted, match="max-output-total"):
        await supervisor.start(SPEC, ALICE)
    clock.now += timedelta(hours=2)
    await trio.sleep(61)  # the next sweep forgets it
    await supervisor.start(SPEC, ALICE)


async def test_a_restart_serves_ended_jobs_and_reports_running_ones_lost(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    first, _ = await run_supervisor(nursery, spawner, tmp_path, clock)
    ended = await first.start(SPEC, ALICE)
    await process_of(ended).write_stdout(b"done\n")
    process_of(ended).exit(0)
    await first.wait(ended)
    running = await first.start(SPEC, ALICE)
    await process_of(running).write_stdout(b"partial\n")
    await trio.testing.wait_all_tasks_blocked()
    # The daemon dies without its job tasks running their clean-up: a copy
    # of the state directory as it is now is what the next daemon finds.
    copy = tmp_path / "after-crash"
    copy.mkdir()
    for path in tmp_path.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    second, _ = await run_supervisor(nursery, FakeSpawner(), copy, clock)
    assert (second.find(ended.job_id, ALICE).snapshot().exit_code) == 0
    assert await collect(second, ended.job_id) == b"done\n"
    lost = second.find(running.job_id, ALICE_LAPTOP).snapshot()
    assert (lost.state, lost.killed, lost.exit_code) == (JobState.LOST, True, None)
    assert await collect(second, running.job_id) == b"partial\n"
    with pytest.raises(JobNotFound):
        second.find(running.job_id, BOB)


async def test_a_restart_with_a_smaller_retain_jobs_forgets_the_excess_at_once(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    first, scope = await run_supervisor(nursery, spawner, tmp_path, clock)
    ids = []
    for _ in range(3):
        clock.now += timedelta(seconds=1)
        ids.append(await ended_job(first))
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    second, _ = await run_supervisor(nursery, FakeSpawner(), tmp_path, clock, retain_jobs=1)
    assert [s.job_id for s in second.list(ALICE, None, None, 10)] == [ids[-1]]
    assert [p.stem for p in tmp_path.glob("*.log")] == [ids[-1]]


async def test_output_no_record_refers_to_is_set_aside_at_start_never_deleted(
    autojump_clock: MockClock,
    nursery: trio.Nursery,
    spawner: FakeSpawner,
    tmp_path: Path,
    clock: Clock,
) -> None:
    orphan = journal_path(tmp_path, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    orphan.write_bytes(b"from a Start that never returned")
    await run_supervisor(nursery, spawner, tmp_path, clock)
    assert not orphan.exists()
    assert (tmp_path / "orphans" / orphan.name).read_bytes() == b"from a Start that never returned"

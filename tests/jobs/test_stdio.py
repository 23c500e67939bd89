"""A job's stdin, terminal, environment and directory as the supervisor
handles them, with fake processes (their stdin is a real pipe)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.errors import FailedPrecondition
from rund_trio.jobs.spec import JobSpec, Terminal
from rund_trio.jobs.supervisor import Job, Supervisor, SupervisorConfig, job_environment
from rund_trio.tls.identity import Identity
from tests.fakes import FakeProcess, FakeSpawner

ALICE = Identity.of("DNS:alice")
CHUNK = 64 * 1024


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner()


@pytest.fixture
async def supervisor(
    nursery: trio.Nursery, spawner: FakeSpawner, tmp_path: Path
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(spawner, SupervisorConfig(state_dir=tmp_path, output_linger=1.0))
    await nursery.start(supervisor.run)
    yield supervisor


def process_of(job: Job) -> FakeProcess:
    assert isinstance(job.process, FakeProcess)
    return job.process


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def read_to_end(fd: int) -> bytes:
    data = b""
    while block := os.read(fd, 1 << 20):
        data += block
    return data


async def test_a_job_without_stdin_gets_none(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",)), ALICE)
    assert process_of(job).spec.stdin_fd is None
    assert process_of(job).spec.terminal_fd is None


async def test_feed_writes_in_order_then_closes_stdin(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)
    written = await supervisor.feed(job, chunks(b"one ", b"two"))
    fd = process_of(job).stdin_fd
    assert fd is not None
    assert (written, read_to_end(fd)) == (7, b"one two")  # end of file: stdin closed
    assert job.stdio is not None and not job.stdio.open


async def test_a_job_that_does_not_read_holds_back_the_feeder(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("sleep",), stdin=True), ALICE)
    fd = process_of(job).stdin_fd
    assert fd is not None
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * CHUNK

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.feed, job, endless())
        await trio.testing.wait_all_tasks_blocked()
        held = pulled
        await trio.testing.wait_all_tasks_blocked()
        assert pulled == held, "the feeder kept pulling while the job did not read"
        pipe_size = _pipe_size(fd)
        assert held <= pipe_size // CHUNK + 1
        os.read(fd, CHUNK)  # the job reads one chunk: exactly one more is taken
        await trio.testing.wait_all_tasks_blocked()
        assert pulled == held + 1
        nursery.cancel_scope.cancel()


def _pipe_size(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


async def test_a_cancelled_feed_leaves_stdin_open_for_the_next(
    supervisor: Supervisor, autojump_clock: trio.testing.MockClock
) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)

    async def then_wait() -> AsyncIterator[bytes]:
        yield b"first "
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    with trio.move_on_after(1):  # the client resets its Input stream
        await supervisor.feed(job, then_wait())
    assert await supervisor.feed(job, chunks(b"second")) == 6
    fd = process_of(job).stdin_fd
    assert fd is not None
    assert read_to_end(fd) == b"first second"


async def test_feed_while_another_feeds_is_refused(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)
    async with trio.open_nursery() as nursery:

        async def forever() -> AsyncIterator[bytes]:
            await trio.sleep_forever()
            yield b""  # pragma: no cover

        nursery.start_soon(supervisor.feed, job, forever())
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FailedPrecondition, match="another client"):
            await supervisor.feed(job, chunks(b"x"))
        nursery.cancel_scope.cancel()


async def test_feed_of_a_job_without_stdin_is_refused(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",)), ALICE)
    with pytest.raises(FailedPrecondition, match="without stdin"):
        await supervisor.feed(job, chunks(b"x"))


async def test_feed_of_an_ended_job_is_refused(
    supervisor: Supervisor, autojump_clock: trio.testing.MockClock
) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)
    process_of(job).exit(0)
    await process_of(job).close_output()
    await job.done.wait()
    with pytest.raises(FailedPrecondition, match="has ended"):
        await supervisor.feed(job, chunks(b"x"))


async def test_a_feed_waiting_when_the_job_ends_is_answered_with_what_it_wrote(
    supervisor: Supervisor, autojump_clock: trio.testing.MockClock
) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)

    async def slow_client() -> AsyncIterator[bytes]:
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    async with trio.open_nursery() as nursery:

        async def end_job() -> None:
            await trio.testing.wait_all_tasks_blocked()
            process_of(job).exit(0)
            await process_of(job).close_output()

        nursery.start_soon(end_job)
        assert await supervisor.feed(job, slow_client()) == 0


async def test_a_job_that_reads_its_input_and_exits_before_the_input_ends_was_fed(
    supervisor: Supervisor, autojump_clock: trio.testing.MockClock
) -> None:
    """The race of ``client input`` into ``sh -c 'read line; ...'``: the job
    takes the line and ends before the end of the Input stream arrives."""
    job = await supervisor.start(JobSpec(argv=("sh",), stdin=True), ALICE)
    fd = process_of(job).stdin_fd
    assert fd is not None
    took: list[bytes] = []

    async def end_arriving_late() -> AsyncIterator[bytes]:
        yield b"hello\n"
        await trio.sleep(1)  # the end of the stream is still on its way

    async def the_job() -> None:
        await trio.testing.wait_all_tasks_blocked()
        took.append(os.read(fd, 1024))
        process_of(job).exit(0)
        await process_of(job).close_output()

    async with trio.open_nursery() as nursery:
        began = trio.current_time()  # (the start's commit, in a thread, lets the clock jump)
        nursery.start_soon(the_job)
        assert await supervisor.feed(job, end_arriving_late()) == 6
        assert trio.current_time() - began < 1  # before the end of the stream arrived
    assert took == [b"hello\n"]


async def test_a_job_that_ends_without_taking_a_chunk_fails_its_feed(
    supervisor: Supervisor, autojump_clock: trio.testing.MockClock
) -> None:
    job = await supervisor.start(JobSpec(argv=("sleep",), stdin=True), ALICE)
    fd = process_of(job).stdin_fd
    assert fd is not None

    async def more_than_the_pipe_holds() -> AsyncIterator[bytes]:
        yield b"x" * (_pipe_size(fd) + 1)

    async def end_job() -> None:
        await trio.testing.wait_all_tasks_blocked()
        process_of(job).exit(0)
        await process_of(job).close_output()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(end_job)
        with pytest.raises(FailedPrecondition, match="ended"):
            await supervisor.feed(job, more_than_the_pipe_holds())


async def test_a_terminal_job_gets_the_slave_and_its_output_is_stdout(
    supervisor: Supervisor,
) -> None:
    job = await supervisor.start(JobSpec(argv=("sh",), terminal=Terminal(30, 100)), ALICE)
    spec = process_of(job).spec
    assert spec.terminal_fd is not None
    assert job.stdio is not None and job.stdio.terminal is not None
    assert not job.stdio.feedable  # -t without -i


async def test_resize_of_a_job_without_terminal_is_refused(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("cat",), stdin=True), ALICE)
    with pytest.raises(FailedPrecondition, match="no terminal"):
        supervisor.resize(job, 40, 120)


async def test_the_working_dir_is_the_processes_cwd(supervisor: Supervisor) -> None:
    job = await supervisor.start(JobSpec(argv=("pwd",), working_dir="/srv"), ALICE)
    assert process_of(job).spec.cwd == "/srv"


def test_job_environment_layers_defaults_term_request_and_job_id() -> None:
    spec = JobSpec(
        argv=("sh",),
        env=(("HOME", "/root"), ("A", "1"), ("A", "2"), ("TERM", "vt100")),
        terminal=Terminal(term="xterm-256color"),
    )
    env = job_environment({"PATH": "/bin", "HOME": "/"}, spec, "JOB")
    assert env == {"PATH": "/bin", "HOME": "/root", "TERM": "vt100", "A": "2", "RUND_JOB_ID": "JOB"}


def test_job_environment_sets_term_for_a_terminal() -> None:
    env = job_environment({}, JobSpec(argv=("sh",), terminal=Terminal()), "JOB")
    assert env == {"TERM": "xterm", "RUND_JOB_ID": "JOB"}

"""Input (a job's stdin) between the client and the daemon in one process,
under trio's autojump clock (the harness of test_virtual_time.py): the order
of the job's end and the end of its input, decided by the test, not by timing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio
from trio.testing import MockClock

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import RpcError
from tests.fakes import FakeProcess
from tests.integration.test_virtual_time import (  # noqa: F401 (fixtures)
    MemoryDaemon,
    daemon,
    spawner,
)

START_WITH_STDIN = pb.JobStartRequest(name="reader", stdin=True)


async def read_a_line_and_exit(process: FakeProcess) -> bytes:
    """What ``sh -c 'read line; echo got $line'`` does with its stdin."""
    assert process.stdin_fd is not None
    await trio.lowlevel.wait_readable(process.stdin_fd)
    line = os.read(process.stdin_fd, 1024)
    process.exit(0)
    await process.close_output()
    return line


async def test_input_read_whole_by_a_job_that_ends_before_the_input_does_succeeds(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,  # noqa: F811
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START_WITH_STDIN)
        read: list[bytes] = []

        async def end_after_the_job() -> AsyncIterator[bytes]:
            yield b"hello\n"
            await trio.sleep(5)  # the job reads it and ends meanwhile

        async def job() -> None:
            read.append(await read_a_line_and_exit(daemon.process()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            assert await rund.input(job_id, end_after_the_job()) == 6
    assert read == [b"hello\n"]


async def test_input_left_over_when_the_job_ended_is_an_error(
    autojump_clock: MockClock,
    daemon: MemoryDaemon,  # noqa: F811
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(START_WITH_STDIN)

        async def more_after_the_job() -> AsyncIterator[bytes]:
            yield b"hello\n"
            await trio.sleep(5)
            yield b"nobody reads this\n"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_a_line_and_exit, daemon.process())
            with pytest.raises(RpcError, match="ended before reading all of its input") as error:
                await rund.input(job_id, more_after_the_job())
    assert error.value.code == "FAILED_PRECONDITION"
    assert "6 bytes were written" in error.value.message

"""A job's stdin pipe and terminal through both isolating spawners (the
``execute`` helper and the fork server), with and without namespaces."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator

import pytest
import trio

from rund_trio.isolation.spec import Isolation
from rund_trio.process.base import ProcessSpec
from rund_trio.process.forkserver import ForkServerSpawner
from rund_trio.process.helper import HelperSpawner
from rund_trio.process.pipes import open_output_pipe
from tests.isolation.conftest import PATH, finish

Spawner = HelperSpawner | ForkServerSpawner


@pytest.fixture(
    params=[
        ("helper", None),
        ("helper", Isolation.none()),
        ("forkserver", None),
        ("forkserver", Isolation.none()),
    ],
    ids=["helper-isolated", "helper-plain", "forkserver-isolated", "forkserver-plain"],
)
async def spawner(request: pytest.FixtureRequest) -> AsyncIterator[Spawner]:
    kind, isolation = request.param
    if kind == "helper":
        yield HelperSpawner(isolation)
        return
    forkserver = ForkServerSpawner(isolation)
    try:
        yield forkserver
    finally:
        await forkserver.aclose()


async def test_the_job_reads_its_stdin_pipe_to_end_of_file(spawner: Spawner) -> None:
    read_end, write_end = open_output_pipe()
    try:
        process = await spawner.spawn(ProcessSpec(("cat",), {"PATH": PATH}, stdin_fd=read_end))
    finally:
        os.close(read_end)
    os.write(write_end, b"through the pipe\n")
    os.close(write_end)
    done = await finish(process)
    assert (done.stdout, done.status.exit_code) == ("through the pipe\n", 0)


def read_terminal(master: int) -> bytes:
    """Everything the job wrote to its terminal, until every slave end closed."""
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as error:
            assert error.errno == errno.EIO
            return data
        if not chunk:
            return data
        data += chunk


async def test_a_terminal_is_the_jobs_stdio_and_controlling_terminal(spawner: Spawner) -> None:
    master, slave = os.openpty()
    script = "test -t 0 && test -t 1 && test -t 2 && echo via-dev-tty > /dev/tty && echo ok"
    try:
        process = await spawner.spawn(
            ProcessSpec(("sh", "-c", script), {"PATH": PATH}, terminal_fd=slave)
        )
    finally:
        os.close(slave)
    try:
        output = await trio.to_thread.run_sync(read_terminal, master)
    finally:
        os.close(master)
    done = await finish(process)
    assert output == b"via-dev-tty\r\nok\r\n"
    assert (done.stdout, done.stderr, done.status.exit_code) == ("", "", 0)

"""A ``-t`` job's terminal on a real kernel: a contained job's is made in its
own devpts (its name exists in the job), sized as asked and resized, and
Ctrl-C typed into it reaches the foreground process of an interactive shell;
a host job's is the daemon's pty and behaves the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from tests.conftest import Daemon
from tests.kernel.daemon import SLOW, read_output_until, wait_job_done


@pytest.fixture(params=["kernel_daemon", "host_kernel_daemon"], ids=["contained", "host"])
def any_daemon(request: pytest.FixtureRequest) -> Daemon:
    daemon: Daemon = request.getfixturevalue(request.param)
    return daemon


async def typed(*keys: bytes) -> AsyncIterator[bytes]:
    for key in keys:
        yield key


def shell_job(**fields: object) -> pb.JobStartRequest:
    """An interactive shell on a terminal, with stdin."""
    return pb.JobStartRequest(name="sh", args=["-i"], tty=True, stdin=True, **fields)  # type: ignore[arg-type]


async def type_into(rund: RundClient, job_id: str, *keys: bytes) -> None:
    await rund.input(job_id, typed(*keys))


async def test_a_contained_terminal_job_names_its_own_terminal_of_the_size_asked(
    kernel_daemon: Daemon,
) -> None:
    script = 'tty; test "$(tty)" -ef /dev/stdin && echo same; stty size; echo /dev/pts/*'
    request = pb.JobStartRequest(
        name="sh", args=["-c", script], tty=True, tty_rows=33, tty_cols=101
    )
    async with kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(request)
            out, _, status = await wait_job_done(rund, job_id)
    assert out == b"/dev/pts/0\r\nsame\r\n33 101\r\n/dev/pts/0 /dev/pts/ptmx\r\n"
    assert status.exit_code.value == 0


async def test_a_host_terminal_job_names_the_daemons_pty(host_kernel_daemon: Daemon) -> None:
    request = pb.JobStartRequest(name="sh", args=["-c", 'tty && test "$(tty)" -ef /dev/stdin'])
    request.tty = True
    async with host_kernel_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(request)
            out, _, status = await wait_job_done(rund, job_id)
    assert out.startswith(b"/dev/pts/") and status.exit_code.value == 0


async def test_an_interactive_shell_sees_a_resize(any_daemon: Daemon) -> None:
    async with any_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(shell_job(tty_rows=24, tty_cols=80))
            await type_into(rund, job_id, b"stty size; echo sized-$((1 + 1))\n")
            assert b"24 80\r\n" in await read_output_until(rund, job_id, b"sized-2")
            await rund.resize(job_id, 40, 120)
            # Input and Resize are separate calls, but this one follows the
            # finished Resize: the shell's next command sees the new size.
            await type_into(rund, job_id, b"echo cols-$(tput cols) rows-$(tput lines)\n")
            await read_output_until(rund, job_id, b"cols-120 rows-40")
            await type_into(rund, job_id, b"exit 3\n")
            _, _, status = await wait_job_done(rund, job_id)
    assert status.exit_code.value == 3


async def test_ctrl_c_reaches_the_foreground_command_of_an_interactive_shell(
    any_daemon: Daemon,
) -> None:
    async with any_daemon.client() as rund:
        with trio.fail_after(SLOW):
            job_id = await rund.start(shell_job())
            # Once it says so, the command leads the terminal's foreground group.
            await type_into(
                rund, job_id, b"sh -c 'echo sleep-$((1 + 1))-started; exec sleep 300'\n"
            )
            await read_output_until(rund, job_id, b"sleep-2-started")
            await type_into(rund, job_id, b"\x03")
            await type_into(rund, job_id, b"echo status-$?-$((1 + 1))\n")
            await read_output_until(rund, job_id, b"status-130-2")
            await type_into(rund, job_id, b"exit\n")
            _, _, status = await wait_job_done(rund, job_id)
    assert status.exit_code.value == 0  # the shell survived the Ctrl-C

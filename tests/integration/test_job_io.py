"""A job's environment, working directory, stdin and terminal through a real
daemon over mTLS, with and without namespaces."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.jobs.isolation_policy import IsolationPolicy, Profile
from tests.conftest import Daemon, Pki, start_daemon


@pytest.fixture(params=[True, False], ids=["namespaces", "no-namespaces"])
async def daemon(
    request: pytest.FixtureRequest, nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> Daemon:
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        isolation=IsolationPolicy(
            namespaces=request.param,
            default_profile=Profile.CONTAINED if request.param else Profile.HOST,
        ),
    )


def sh(script: str, **fields: object) -> pb.JobStartRequest:
    return pb.JobStartRequest(name="sh", args=["-c", script], **fields)  # type: ignore[arg-type]


async def output_of(rund: RundClient, job_id: str) -> bytes:
    return b"".join([chunk.stdout + chunk.stderr async for chunk in rund.log(job_id)])


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_the_default_environment_is_small_and_documented(daemon: Daemon) -> None:
    os.environ["RUND_TEST_LEAK"] = "leaked"
    try:
        async with daemon.client() as rund:
            job_id = await rund.start(pb.JobStartRequest(name="env"))
            names = {line.split(b"=", 1)[0] for line in (await output_of(rund, job_id)).split()}
    finally:
        del os.environ["RUND_TEST_LEAK"]
    assert names == {b"PATH", b"HOME", b"LANG", b"RUND_JOB_ID"}


async def test_env_entries_are_added_and_may_replace_defaults(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            sh('printf "%s|%s|%s" "$FOO" "$HOME" "$EMPTY-"', env=["FOO=a b=c", "HOME=/x", "EMPTY="])
        )
        assert await output_of(rund, job_id) == b"a b=c|/x|-"


async def test_an_env_entry_with_nul_is_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as caught:
            await rund.start(pb.JobStartRequest(name="true", env=["A=\0"]))
        assert caught.value.code == "INVALID_ARGUMENT"
        assert await rund.start(pb.JobStartRequest(name="true"))  # still serving


async def test_an_env_over_the_cap_is_resource_exhausted(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_env_bytes=1000)
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as caught:
            await rund.start(pb.JobStartRequest(name="true", env=["A=" + "x" * 1000]))
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert "--max-env-bytes" in caught.value.message


async def test_a_job_starts_in_slash_by_default(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="pwd"))
        assert await output_of(rund, job_id) == b"/\n"
        assert (await rund.status(job_id)).working_dir == "/"


async def test_a_job_starts_in_the_working_dir_asked_for(
    daemon: Daemon, job_visible_dir: Path
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="pwd", working_dir=str(job_visible_dir)))
        assert await output_of(rund, job_id) == f"{job_visible_dir}\n".encode()


async def test_a_working_dir_that_is_a_file_is_a_failed_precondition_naming_it(
    daemon: Daemon, job_visible_dir: Path
) -> None:
    file = job_visible_dir / "file"
    file.write_text("")
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as caught:
            await rund.start(pb.JobStartRequest(name="pwd", working_dir=str(file)))
    assert caught.value.code == "FAILED_PRECONDITION"
    assert str(file) in caught.value.message
    assert "ENOTDIR" in caught.value.message


async def test_a_relative_working_dir_is_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as caught:
            await rund.start(pb.JobStartRequest(name="pwd", working_dir="src"))
    assert caught.value.code == "INVALID_ARGUMENT"


async def test_input_reaches_the_job_and_its_end_closes_stdin(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="cat", stdin=True))
        written = await rund.input(job_id, chunks(b"hello ", b"world\n"))
        assert written == 12
        assert await output_of(rund, job_id) == b"hello world\n"
        status = await rund.status(job_id)
    assert (status.exit_code.value, status.stdin, status.stdin_open) == (0, True, False)


async def test_a_job_without_stdin_reads_end_of_file_and_refuses_input(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(sh("cat; echo done; sleep 30"))
        with pytest.raises(RpcError) as caught:
            await rund.input(job_id, chunks(b"x"))
        assert caught.value.code == "FAILED_PRECONDITION"
        assert "without stdin" in caught.value.message
        log = rund.log(job_id)
        assert (await anext(log)).stdout == b"done\n"
        await rund.stop(job_id)


async def test_input_to_an_ended_job_is_a_failed_precondition(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true", stdin=True))
        await output_of(rund, job_id)
        with pytest.raises(RpcError) as caught:
            await rund.input(job_id, chunks(b"late"))
    assert caught.value.code == "FAILED_PRECONDITION"


async def test_a_second_input_after_the_first_ended_is_refused(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(sh("cat >/dev/null; sleep 30", stdin=True))
        await rund.input(job_id, chunks(b"one"))
        with pytest.raises(RpcError) as caught:
            await rund.input(job_id, chunks(b"two"))
        await rund.stop(job_id)
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "closed" in caught.value.message


async def test_an_input_feeding_a_job_that_ends_is_answered(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(sh("head -c 3 >/dev/null", stdin=True))

        async def forever() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536

        with trio.fail_after(20), pytest.raises(RpcError) as caught:
            await rund.input(job_id, forever())
    assert caught.value.code == "FAILED_PRECONDITION"


async def test_a_job_that_never_reads_holds_back_the_sender(daemon: Daemon) -> None:
    """Backpressure: the daemon takes no more than the pipe and one HTTP/2
    stream window hold, however much the client offers."""
    sent = 0
    offered = 256 * 1024 * 1024
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["300"], stdin=True))

        async def counted() -> AsyncIterator[bytes]:
            nonlocal sent
            block = b"x" * (256 * 1024)
            while sent < offered:
                yield block
                sent += len(block)

        with trio.move_on_after(3):
            await rund.input(job_id, counted())
        await rund.stop(job_id)
    # 1 MiB pipe + an 8 MiB stream window + messages in flight on both sides
    assert sent < 24 * 1024 * 1024


async def test_a_terminal_job_sees_a_tty_of_the_size_asked_for(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            sh(
                'test -t 0 && test -t 1 && test -t 2 && stty size && echo "$TERM"',
                tty=True,
                tty_rows=33,
                tty_cols=101,
            )
        )
        output = await output_of(rund, job_id)
        status = await rund.status(job_id)
    assert output == b"33 101\r\nxterm\r\n"
    assert (status.tty, status.exit_code.value) == (True, 0)


async def test_a_terminal_job_names_its_terminal_and_the_name_is_its_stdin(
    daemon: Daemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(sh('tty && test "$(tty)" -ef /dev/stdin && echo same', tty=True))
        output = await output_of(rund, job_id)
    assert re.fullmatch(rb"/dev/pts/\d+\r\nsame\r\n", output), output


async def test_a_contained_jobs_terminal_is_in_its_own_devpts_and_owned_by_its_user(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        isolation=IsolationPolicy(
            default_profile=Profile.CONTAINED,
            allowed_uids=frozenset({1000}),
            allowed_gids=frozenset({1000}),
        ),
    )
    script = 'tty; stat -c "%u %g %a" "$(tty)"; echo /dev/pts/*; echo via-dev-tty > /dev/tty'
    script += "; ls /proc/self/fd"  # the terminal and ls's directory: no socket left over
    request = sh(script, tty=True)
    request.uid.value = 1000
    async with daemon.client() as rund:
        job_id = await rund.start(request)
        output = await output_of(rund, job_id)
        status = await rund.status(job_id)
    assert output == (
        b"/dev/pts/0\r\n1000 1000 620\r\n/dev/pts/0 /dev/pts/ptmx\r\nvia-dev-tty\r\n0  1  2  3\r\n"
    )
    assert status.exit_code.value == 0


async def test_a_terminal_job_whose_program_is_missing_fails_and_leaves_no_descriptor(
    daemon: Daemon,
) -> None:
    missing = pb.JobStartRequest(name="no-such-program", tty=True, stdin=True)
    async with daemon.client() as rund:

        async def refused() -> None:
            with pytest.raises(RpcError) as caught:
                await rund.start(missing)
            assert caught.value.code == "FAILED_PRECONDITION"
            assert "no-such-program" in caught.value.message

        await refused()  # whatever the daemon opens once is open now
        before = sorted(os.listdir("/proc/self/fd"))
        for _ in range(3):
            await refused()
        assert sorted(os.listdir("/proc/self/fd")) == before


async def test_resize_changes_a_terminal_jobs_window(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            sh("read line; stty size", tty=True, stdin=True, tty_rows=10, tty_cols=20)
        )
        await rund.resize(job_id, 40, 120)
        await rund.input(job_id, chunks(b"go\n"))
        output = await output_of(rund, job_id)
    assert output.endswith(b"40 120\r\n")


async def test_resize_of_a_job_without_terminal_is_a_failed_precondition(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["30"]))
        with pytest.raises(RpcError) as caught:
            await rund.resize(job_id, 40, 120)
        await rund.stop(job_id)
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "no terminal" in caught.value.message


async def test_ctrl_c_typed_into_a_terminal_interrupts_the_job(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(
            pb.JobStartRequest(name="sleep", args=["300"], tty=True, stdin=True)
        )
        with trio.fail_after(10):
            await rund.input(job_id, chunks(b"\x03"))
            await output_of(rund, job_id)
        status = await rund.status(job_id)
    assert status.signal_name == "SIGINT"


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "no-cgroups"])
async def test_a_graceful_stop_reaches_a_terminal_job_in_its_own_session(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, cgroups: bool
) -> None:
    """With a terminal, the job's session is inside its PID namespace; the
    daemon's SIGTERM still reaches it (the cgroup, or relayed by the helper)."""
    overrides: dict[str, object] = {} if cgroups else {"cgroups": None}
    daemon = await start_daemon(nursery, pki, tmp_path, **overrides)
    async with daemon.client() as rund:
        job_id = await rund.start(
            sh('trap "echo term; exit 3" TERM; echo ready; while :; do sleep 0.05; done', tty=True)
        )
        log = rund.log(job_id)
        assert (await anext(log)).stdout == b"ready\r\n"
        status = await rund.stop(job_id, timedelta(seconds=10))
    assert (status.exit_code.value, status.state) == (3, pb.JOB_STATE_STOPPED)


async def test_input_naming_no_valid_job_is_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        with pytest.raises(RpcError) as caught:
            await rund.input("not-a-ulid", chunks(b"x"))
    assert caught.value.code == "INVALID_ARGUMENT"


async def test_input_to_another_clients_job_is_not_found(daemon: Daemon) -> None:
    async with daemon.client("alice") as alice, daemon.client("bob") as bob:
        job_id = await alice.start(pb.JobStartRequest(name="cat", stdin=True))
        with pytest.raises(RpcError) as caught:
            await bob.input(job_id, chunks(b"x"))
        with pytest.raises(RpcError) as resized:
            await bob.resize(job_id, 10, 10)
        await alice.stop(job_id)
    assert (caught.value.code, resized.value.code) == ("NOT_FOUND", "NOT_FOUND")

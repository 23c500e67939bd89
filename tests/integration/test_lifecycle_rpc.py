"""List, Wait and Remove against a real daemon over mutual TLS, and the bad
input each gets a precise status for."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from tests.conftest import Daemon, Pki, start_daemon

MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


async def ended(rund: RundClient, *argv: str) -> str:
    job_id = await rund.start(pb.JobStartRequest(name=argv[0], args=argv[1:]))
    await rund.wait(job_id)
    return job_id


async def rpc_error(call: object) -> RpcError:
    with pytest.raises(RpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def test_list_returns_the_callers_jobs_newest_first_with_their_ids(daemon: Daemon) -> None:
    async with daemon.client("alice") as alice, daemon.client("bob") as bob:
        first = await ended(alice, "true")
        await ended(bob, "true")
        second = await alice.start(pb.JobStartRequest(name="sleep", args=["30"]))
        page = await alice.list_jobs(pb.JOB_LIST_FILTER_ALL)
        running = await alice.list_jobs(pb.JOB_LIST_FILTER_RUNNING)
        done = await alice.list_jobs(pb.JOB_LIST_FILTER_ENDED)
    assert [job.ulid for job in page.jobs] == [second, first]
    assert page.next_page_token == ""
    assert [job.ulid for job in running.jobs] == [second]
    assert [(job.ulid, job.state) for job in done.jobs] == [(first, pb.JOB_STATE_EXITED)]
    assert page.jobs[0].name == "sleep" and page.jobs[0].HasField("started_at")


async def test_list_pages_through_every_job_once(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        ids = [await ended(rund, "true") for _ in range(5)]
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await rund.list_jobs(pb.JOB_LIST_FILTER_ENDED, page_size=2, page_token=token)
            seen += [job.ulid for job in page.jobs]
            pages += 1
            token = page.next_page_token
            if not token:
                break
    assert seen == ids[::-1]
    assert pages == 3


async def test_a_stranger_lists_none_of_alices_jobs(daemon: Daemon) -> None:
    async with daemon.client("alice") as alice, daemon.client("bob") as bob:
        await ended(alice, "true")
        assert list((await bob.list_jobs()).jobs) == []


@pytest.mark.parametrize("size", [-1, 1001, 2**31 - 1])
async def test_absurd_page_sizes_are_invalid_argument(daemon: Daemon, size: int) -> None:
    async with daemon.client() as rund:
        error = await rpc_error(rund.list_jobs(page_size=size))
    assert error.code == "INVALID_ARGUMENT"
    assert "page_size must be between 1 and 1000" in error.message


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!",
        "MQAwMUFSWjNOREVLVFNWNFJSRkZRNjlHNUZBVg",  # "1", filter 0, an id: no MAC
        "x" * 300,
    ],
)
async def test_a_forged_or_malformed_page_token_is_invalid_argument(
    daemon: Daemon, token: str
) -> None:
    async with daemon.client() as rund:
        error = await rpc_error(rund.list_jobs(page_token=token))
    assert error.code == "INVALID_ARGUMENT"
    assert "page_token is not one this daemon gave out" in error.message


async def test_a_tampered_page_token_is_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        for _ in range(2):
            await ended(rund, "true")
        token = (await rund.list_jobs(page_size=1)).next_page_token
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        error = await rpc_error(rund.list_jobs(page_size=1, page_token=tampered))
        other_filter = await rpc_error(
            rund.list_jobs(pb.JOB_LIST_FILTER_ENDED, page_size=1, page_token=token)
        )
    assert error.code == other_filter.code == "INVALID_ARGUMENT"
    assert "another filter" in other_filter.message


async def test_an_unknown_filter_is_invalid_argument(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        error = await rpc_error(rund.list_jobs(filter=7))  # type: ignore[arg-type]
    assert error.code == "INVALID_ARGUMENT"


async def test_wait_returns_once_the_job_ended(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sh", args=["-c", "sleep 0.3; exit 4"]))
        status = await rund.wait(job_id)
        again = await rund.wait(job_id)
    assert (status.state, status.exit_code.value, status.ulid) == (pb.JOB_STATE_EXITED, 4, job_id)
    assert again == status


async def test_remove_forgets_an_ended_job_and_its_output(daemon: Daemon) -> None:
    async with daemon.client() as rund:
        job_id = await ended(rund, "echo", "bye")
        removed = await rund.remove(job_id)
        status_error = await rpc_error(rund.status(job_id))
        again = await rpc_error(rund.remove(job_id))
    assert removed.exit_code.value == 0
    assert status_error.code == again.code == "NOT_FOUND"
    assert not (daemon.running.state_dir / f"{job_id}.log").exists()


async def test_remove_of_a_running_job_is_failed_precondition_unless_forced(
    daemon: Daemon,
) -> None:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="sleep", args=["30"]))
        refused = await rpc_error(rund.remove(job_id))
        still = await rund.status(job_id)
        forced = await rund.remove(job_id, force=True)
    assert refused.code == "FAILED_PRECONDITION"
    assert "still running" in refused.message
    assert still.state == pb.JOB_STATE_RUNNING
    assert (forced.state, forced.signal_name) == (pb.JOB_STATE_STOPPED, "SIGKILL")


async def test_a_log_stream_of_a_job_removed_meanwhile_ends_cleanly(daemon: Daemon) -> None:
    async with daemon.client() as rund, daemon.client() as other:
        job_id = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", "echo first; exec sleep 30"])
        )
        stream = rund.log(job_id)
        assert (await anext(stream)).stdout == b"first\n"
        await other.remove(job_id, force=True)
        with trio.fail_after(10):
            rest = [chunk async for chunk in stream]
    assert rest == []


@pytest.mark.parametrize("rpc", ["wait", "remove"])
@pytest.mark.parametrize("job_id", ["", "not-a-ulid", "01ARZ3NDEKTSV4RRFFQ69G5FA!"])
async def test_a_malformed_id_is_invalid_argument(daemon: Daemon, rpc: str, job_id: str) -> None:
    async with daemon.client() as rund:
        error = await rpc_error(getattr(rund, rpc)(job_id))
    assert error.code == "INVALID_ARGUMENT"
    assert "is not a valid job id" in error.message


@pytest.mark.parametrize("rpc", ["wait", "remove"])
async def test_an_unknown_id_is_not_found(daemon: Daemon, rpc: str) -> None:
    async with daemon.client() as rund:
        error = await rpc_error(getattr(rund, rpc)(MISSING))
    assert (error.code, error.message) == ("NOT_FOUND", f"job {MISSING} not found")


async def test_certificates_sharing_a_san_share_the_running_jobs_quota(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki, tmp_path, max_running_jobs_per_client=1)
    sleep = pb.JobStartRequest(name="sleep", args=["30"])
    async with daemon.client("alice") as alice, daemon.client("alice-laptop") as laptop:
        await alice.start(sleep)
        refused = await rpc_error(laptop.start(sleep))
    async with daemon.client("bob") as bob:
        await bob.start(sleep)
    assert refused.code == "RESOURCE_EXHAUSTED"
    assert "you already have 1 running jobs, the limit per client" in refused.message

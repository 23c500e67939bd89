"""Who may do what to a job, over mutual TLS against a real daemon.

The callers, by the certificate they present (``tests/conftest.py``):

* ``alice`` -- the owner, who starts every job here;
* ``alice-laptop`` -- another certificate sharing one SAN with alice's
  (``email:alice@example.com``): the same principal;
* ``bob`` -- a stranger, with SANs of his own;
* ``nobody`` -- a certificate without any SAN.

Only the first two reach alice's jobs. Everyone else gets NOT_FOUND, worded
exactly as for a job id that does not exist, so a stranger cannot even learn
that a job exists; and alice's job is untouched by what they tried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from tests.conftest import Daemon

MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
ALLOWED = ("alice", "alice-laptop")
REFUSED = ("bob", "nobody")


async def status(rund: RundClient, job_id: str) -> None:
    assert (await rund.status(job_id)).state == pb.JOB_STATE_RUNNING


async def stop(rund: RundClient, job_id: str) -> None:
    assert (await rund.stop(job_id)).stopped


async def log(rund: RundClient, job_id: str) -> None:
    async for chunk in rund.log(job_id):
        assert chunk.stdout == b"started\n"
        return


async def wait(rund: RundClient, job_id: str) -> None:
    with trio.move_on_after(0.5) as waiting:  # alice's job runs for a minute
        await rund.wait(job_id)
    assert waiting.cancelled_caught


async def remove(rund: RundClient, job_id: str) -> None:
    assert (await rund.remove(job_id, force=True)).stopped


RPCS: dict[str, Callable[[RundClient, str], Awaitable[None]]] = {
    "Status": status,
    "Stop": stop,
    "Log": log,
    "Wait": wait,
    "Remove": remove,
}


async def start_alices_job(daemon: Daemon) -> str:
    async with daemon.client("alice") as alice:
        return await alice.start(
            pb.JobStartRequest(name="sh", args=["-c", "echo started; exec sleep 60"])
        )


async def not_found_message(daemon: Daemon, caller: str, rpc: str, job_id: str) -> str:
    async with daemon.client(caller) as rund:
        with pytest.raises(RpcError) as error:
            await RPCS[rpc](rund, job_id)
    assert error.value.code == "NOT_FOUND"
    return error.value.message.replace(job_id, "<id>")


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("caller", ALLOWED)
async def test_the_owner_and_a_certificate_sharing_a_san_may_call(
    daemon: Daemon, caller: str, rpc: str
) -> None:
    job_id = await start_alices_job(daemon)
    async with daemon.client(caller) as rund:
        await RPCS[rpc](rund, job_id)


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("caller", REFUSED)
async def test_others_get_the_not_found_of_a_job_that_does_not_exist(
    daemon: Daemon, caller: str, rpc: str
) -> None:
    job_id = await start_alices_job(daemon)
    not_yours = await not_found_message(daemon, caller, rpc, job_id)
    assert not_yours == await not_found_message(daemon, caller, rpc, MISSING)
    async with daemon.client("alice") as alice:
        assert (await alice.status(job_id)).state == pb.JOB_STATE_RUNNING


@pytest.mark.parametrize("caller", ("alice", "alice-laptop", "bob"))
async def test_any_certificate_with_a_san_may_start_a_job(daemon: Daemon, caller: str) -> None:
    async with daemon.client(caller) as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true"))
    assert len(job_id) == 26


async def test_a_certificate_without_san_may_not_start_a_job(daemon: Daemon) -> None:
    async with daemon.client("nobody") as rund:
        with pytest.raises(RpcError) as error:
            await rund.start(pb.JobStartRequest(name="true"))
    assert error.value.code == "PERMISSION_DENIED"
    assert "no subject alternative name" in error.value.message


@pytest.mark.parametrize("caller", ALLOWED)
async def test_list_shows_the_owner_and_a_certificate_sharing_a_san_the_job(
    daemon: Daemon, caller: str
) -> None:
    job_id = await start_alices_job(daemon)
    async with daemon.client(caller) as rund:
        assert [job.ulid for job in (await rund.list_jobs()).jobs] == [job_id]


@pytest.mark.parametrize("caller", REFUSED)
async def test_list_shows_others_nothing_at_all(daemon: Daemon, caller: str) -> None:
    await start_alices_job(daemon)
    async with daemon.client(caller) as rund:
        for which in (pb.JOB_LIST_FILTER_ALL, pb.JOB_LIST_FILTER_RUNNING, pb.JOB_LIST_FILTER_ENDED):
            page = await rund.list_jobs(which)
            assert (list(page.jobs), page.next_page_token) == ([], "")


async def test_an_ended_job_is_as_invisible_to_others_as_a_running_one(daemon: Daemon) -> None:
    async with daemon.client("alice") as alice:
        job_id = await alice.start(pb.JobStartRequest(name="true"))
        await alice.wait(job_id)
    for caller in REFUSED:
        for rpc in ("Status", "Log", "Remove"):
            assert await not_found_message(daemon, caller, rpc, job_id) == (
                await not_found_message(daemon, caller, rpc, MISSING)
            )
    async with daemon.client("alice-laptop") as laptop:
        assert (await laptop.status(job_id)).exit_code.value == 0

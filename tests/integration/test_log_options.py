"""Log options over the wire: bad values refused precisely, the daemon serving on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rund_trio.api import rund_pb2 as pb
from rund_trio.errors import RpcError
from tests.conftest import Daemon


async def refusal(daemon: Daemon, **options: object) -> RpcError:
    async with daemon.client() as rund:
        job_id = await rund.start(pb.JobStartRequest(name="true"))
        with pytest.raises(RpcError) as refused:
            async for _ in rund.log(job_id, **options):  # type: ignore[arg-type]
                pass
        assert [chunk async for chunk in rund.log(job_id)] == [], "the daemon serves on"
    return refused.value


async def test_a_negative_tail_is_invalid_argument(daemon: Daemon) -> None:
    error = await refusal(daemon, tail_lines=-1)
    assert error.code == "INVALID_ARGUMENT"
    assert error.message == (
        "tail_lines -1 is negative: ask for 0 or more lines, or leave it unset for the whole output"
    )


async def test_since_in_the_future_is_invalid_argument(daemon: Daemon) -> None:
    error = await refusal(daemon, since=datetime.now(UTC) + timedelta(hours=1))
    assert error.code == "INVALID_ARGUMENT"
    assert "is in the future (the daemon's clock says " in error.message

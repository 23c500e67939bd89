"""Where the host cannot create a user namespace, a contained job is refused
with a line that says so, never run with less isolation.

Runs only in the kernel tier (``RUND_KERNEL_TIER=1``): it sets the host-wide
``user.max_user_namespaces`` to 0 for a moment, which no shared machine's test
run may do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rund_trio.errors import RpcError
from tests.escape.conftest import Target, run_job

MAX_USER_NAMESPACES = Path("/proc/sys/user/max_user_namespaces")


@pytest.fixture
def no_user_namespaces(target: Target) -> Iterator[None]:
    """(After ``target``: its own set-up starts a contained job.)"""
    if os.environ.get("RUND_KERNEL_TIER") != "1":
        pytest.skip("changes a host-wide sysctl: kernel tier only")
    before = MAX_USER_NAMESPACES.read_text()
    MAX_USER_NAMESPACES.write_text("0\n")
    try:
        yield
    finally:
        MAX_USER_NAMESPACES.write_text(before)


async def test_a_contained_job_is_refused_where_there_are_no_user_namespaces(
    target: Target, no_user_namespaces: None
) -> None:
    with pytest.raises(RpcError) as error:
        await run_job(target.daemon, "id")
    assert error.value.code == "FAILED_PRECONDITION"
    assert "contained jobs need a user namespace" in error.value.message

"""Fixtures for the isolation tests: real processes, as root, on this host."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from rund_trio.isolation.spec import Isolation
from rund_trio.process.base import ExitStatus, ProcessSpec
from rund_trio.process.helper import HelperProcess, HelperSpawner

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HERE = Path(__file__).parent
HOST_PROFILE = Isolation(contained=False)
"""Namespaces, but not contained: a host job's (today's) powers."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without root, skip this directory's tests of real jobs (not the spec's)."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="namespaces and mounts need root")
    for item in items:
        path = Path(str(item.fspath))
        if path.is_relative_to(HERE) and path.name != "test_spec.py":
            item.add_marker(skip)


@dataclass
class Finished:
    status: ExitStatus
    stdout: str
    stderr: str


async def finish(process: HelperProcess) -> Finished:
    """Read both streams to their end, then wait for the process."""
    chunks: dict[str, list[bytes | bytearray]] = {"out": [], "err": []}

    async def drain(stream: trio.abc.ReceiveStream, into: list[bytes | bytearray]) -> None:
        while chunk := await stream.receive_some(65536):
            into.append(chunk)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process.stdout, chunks["out"])
            nursery.start_soon(drain, process.stderr, chunks["err"])
        status = await process.wait()
    await process.aclose()
    return Finished(status, b"".join(chunks["out"]).decode(), b"".join(chunks["err"]).decode())


async def run_job(
    *argv: str,
    isolation: Isolation | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    spawner: HelperSpawner | None = None,
) -> Finished:
    """Run one job through the helper to its end; by default with the host
    profile's isolation (namespaces, not contained)."""
    spec = ProcessSpec(tuple(argv), {"PATH": PATH} if env is None else env, cwd)
    spec = replace(spec, isolation=isolation or HOST_PROFILE)
    process = await (spawner or HelperSpawner()).spawn(spec)
    return await finish(process)

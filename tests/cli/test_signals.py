"""Signals in the client on asyncio, in process: the command's one signal
receiver sees every Ctrl-C, including one that comes while the first is
being handled."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from rund_trio.api import rund_pb2 as pb
from rund_trio.cli import client_cmd, tls_discovery
from rund_trio.client.api import RundClient


class SlowStopClient:
    """A daemon whose Stop takes its whole (long) grace period: the job
    ignores SIGTERM. Each call sends the next Ctrl-C, as a person would."""

    def __init__(self) -> None:
        self.stopped = anyio.Event()
        self.stop_calls = 0

    async def start(self, request: pb.JobStartRequest) -> str:
        return "job"

    async def log(self, job_id: str) -> AsyncIterator[Any]:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: `run` stops the job
        await self.stopped.wait()
        return
        yield

    async def stop(self, job_id: str, grace: object = None) -> pb.JobStatus:
        self.stop_calls += 1
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while Stop waits
        with anyio.move_on_after(10):  # the grace period
            await anyio.sleep_forever()
        self.stopped.set()
        return pb.JobStatus(stopped=True)

    async def status(self, job_id: str) -> pb.JobStatus:
        status = pb.JobStatus()
        status.signal.value = signal.SIGKILL
        return status


def test_a_second_ctrl_c_during_the_stop_of_run_ends_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = SlowStopClient()

    @asynccontextmanager
    async def connect(addr: str, context: object) -> AsyncIterator[SlowStopClient]:
        yield client

    class NoFiles:
        def client_context(self) -> None:
            return None

    class NoTls:
        files = NoFiles()

    monkeypatch.setattr(RundClient, "connect", connect)
    monkeypatch.setattr(tls_discovery, "client_tls", lambda args: NoTls())
    args = argparse.Namespace(
        addr="localhost:1",
        command=["sleep", "1000"],
        action_fn=client_cmd._run,
        network=None,
        uid=None,
        gid=None,
        env=[],
        env_file=[],
        workdir="",
        interactive=False,
        tty=False,
        host=False,
        **{field: None for _, field, _, _ in client_cmd.LIMIT_FLAGS},
    )
    assert client_cmd.run_action(args) == 128 + signal.SIGINT
    assert client.stop_calls == 1
    assert not client.stopped.is_set()  # it did not wait for the grace period

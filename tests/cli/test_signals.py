"""Signals in the client on asyncio, in process: the command's one signal
receiver sees every Ctrl-C, including one that comes while the first is
being handled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest

from rund_trio.api import rund_pb2 as pb
from rund_trio.cli import client_cmd, tls_discovery
from rund_trio.cli.main import build_parser
from rund_trio.client.api import RundClient


class SlowStopClient:
    """A daemon whose graceful Stop takes its whole (long) grace period: the
    job ignores SIGTERM. A Stop without grace kills it at once. The first
    Stop sends the next Ctrl-C, as a person would."""

    def __init__(self) -> None:
        self.stopped = anyio.Event()
        self.graces: list[object] = []
        self.grace_ran_out = False

    async def start(self, request: pb.JobStartRequest) -> str:
        return "job"

    async def log(self, job_id: str) -> AsyncIterator[Any]:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: `run` stops the job
        await self.stopped.wait()
        return
        yield

    async def stop(self, job_id: str, grace: object = None) -> pb.JobStatus:
        self.graces.append(grace)
        if grace is not None:
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while Stop waits
            await anyio.sleep(10)  # the grace period
            self.grace_ran_out = True
        self.stopped.set()
        return pb.JobStatus(stopped=True)

    async def status(self, job_id: str) -> pb.JobStatus:
        status = pb.JobStatus()
        status.signal.value = signal.SIGKILL
        return status


def test_a_second_ctrl_c_during_the_graceful_stop_of_run_kills_the_job_at_once(
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
    args = build_parser().parse_args(
        ["client", "run", "--addr", "localhost:1", "--", "sleep", "1000"]
    )
    assert client_cmd.run_action(args) == 128 + signal.SIGKILL
    assert len(client.graces) == 2
    assert client.graces[0] is not None  # the first Ctrl-C: SIGTERM, then the grace
    assert client.graces[1] is None  # the second: kill now
    assert not client.grace_ran_out  # `run` did not wait for the grace period


class WaitingClient:
    """A job that never ends: ``wait`` blocks until a signal comes (sent by
    the fake itself, as a person would while the command waits)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    async def wait(self, job_id: str) -> pb.JobStatus:
        os.kill(os.getpid(), self.signum)
        time.sleep(30)  # the signal's handler interrupts this at once
        raise AssertionError("the signal did not end the command")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_a_one_shot_command_quietly_with_128_plus_it(
    monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    """``client wait`` runs without an event loop, on a blocking connection."""

    @contextmanager
    def connect_blocking(addr: str, context: object) -> Iterator[WaitingClient]:
        yield WaitingClient(signum)

    class NoFiles:
        def client_context(self) -> None:
            return None

    class NoTls:
        files = NoFiles()

    monkeypatch.setattr(RundClient, "connect_blocking", connect_blocking)
    monkeypatch.setattr(tls_discovery, "client_tls", lambda args: NoTls())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    args = build_parser().parse_args(["client", "wait", "--addr", "localhost:1", "job"])
    assert client_cmd.run_action(args) == 128 + signum
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back as they were

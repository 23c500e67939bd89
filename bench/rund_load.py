"""The load the benchmark puts on a daemon, through ``RundClient`` (one
connection per simulated client), all under one trio event loop.

Every function is bounded in count and in time and returns plain data
(latencies in milliseconds, byte counts, seconds)."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field

import trio

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient

RUNNING = pb.JOB_STATE_RUNNING


def request(*argv: str) -> pb.JobStartRequest:
    return pb.JobStartRequest(name=argv[0], args=list(argv[1:]))


@dataclass
class Latencies:
    samples_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    errors: int = 0
    truncated: bool = False  # stopped by the time bound before the count
    job_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.samples_ms) / self.elapsed_s if self.elapsed_s else 0.0


async def _clients(
    stack: AsyncExitStack, addr: str, ctx: ssl.SSLContext, n: int
) -> list[RundClient]:
    return [await stack.enter_async_context(RundClient.connect(addr, ctx)) for _ in range(n)]


async def timed_calls(
    addr: str,
    ctx: ssl.SSLContext,
    call: Callable[[RundClient, int], object],
    *,
    clients: int,
    count: int,
    max_seconds: float,
    warmup: int = 10,
    keep_results: bool = False,
) -> Latencies:
    """``count`` calls of ``call(client, i)`` spread over ``clients``
    connections running concurrently (each call awaits the previous one on its
    connection), stopping early after ``max_seconds``. Each connection is warm
    (``warmup`` untimed calls) before the clock starts."""
    out = Latencies()
    async with AsyncExitStack() as stack:
        conns = await _clients(stack, addr, ctx, clients)
        for conn in conns:
            for i in range(warmup):
                result = await call(conn, -1 - i)  # type: ignore[misc]
                if keep_results:
                    out.job_ids.append(str(result))
        next_index = 0

        async def worker(conn: RundClient) -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                begin = time.perf_counter()
                try:
                    result = await call(conn, index)  # type: ignore[misc]
                except Exception:
                    out.errors += 1
                    continue
                out.samples_ms.append((time.perf_counter() - begin) * 1000)
                if keep_results:
                    out.job_ids.append(str(result))

        begin = time.perf_counter()
        with trio.move_on_after(max_seconds) as scope:
            async with trio.open_nursery() as nursery:
                for conn in conns:
                    nursery.start_soon(worker, conn)
        out.elapsed_s = time.perf_counter() - begin
        out.truncated = scope.cancelled_caught
    return out


async def start_jobs(
    addr: str,
    ctx: ssl.SSLContext,
    argv: tuple[str, ...],
    *,
    clients: int,
    count: int,
    max_seconds: float,
    warmup: int = 10,
) -> Latencies:
    req = request(*argv)

    async def start(conn: RundClient, _: int) -> str:
        return await conn.start(req)

    return await timed_calls(
        addr,
        ctx,
        start,
        clients=clients,
        count=count,
        max_seconds=max_seconds,
        warmup=warmup,
        keep_results=True,
    )


async def statuses(
    addr: str,
    ctx: ssl.SSLContext,
    job_ids: list[str],
    *,
    clients: int,
    count: int,
    max_seconds: float,
) -> Latencies:
    rng = random.Random(5)

    async def status(conn: RundClient, _: int) -> None:
        await conn.status(rng.choice(job_ids))

    return await timed_calls(
        addr, ctx, status, clients=clients, count=count, max_seconds=max_seconds
    )


async def wait_ended(
    addr: str, ctx: ssl.SSLContext, job_ids: list[str], max_seconds: float
) -> bool:
    """Poll Status until every one of ``job_ids`` ended (True) or time is up."""
    async with RundClient.connect(addr, ctx) as conn:
        with trio.move_on_after(max_seconds):
            for job_id in job_ids:
                while (await conn.status(job_id)).state == RUNNING:
                    await trio.sleep(0.02)
            return True
    return False


async def stop_all(
    addr: str,
    ctx: ssl.SSLContext,
    job_ids: list[str],
    *,
    clients: int = 8,
    max_seconds: float = 120,
) -> Latencies:
    ids = list(job_ids)

    async def stop(conn: RundClient, index: int) -> None:
        await conn.stop(ids[index])

    return await timed_calls(
        addr, ctx, stop, clients=clients, count=len(ids), max_seconds=max_seconds, warmup=0
    )


@dataclass
class Stream:
    subscribers: int
    bytes_each: list[int]
    seconds_each: list[float]
    elapsed_s: float
    truncated: bool
    job_status: dict[str, object]
    connect_s: float = 0.0  # connecting the subscribers (not timed)
    close_s: float = 0.0  # closing them afterwards (not timed)

    @property
    def aggregate_mb_s(self) -> float:
        return sum(self.bytes_each) / self.elapsed_s / 1e6 if self.elapsed_s else 0.0

    @property
    def per_subscriber_mb_s(self) -> list[float]:
        pairs = zip(self.bytes_each, self.seconds_each, strict=True)
        return [b / s / 1e6 if s else 0.0 for b, s in pairs]


async def stream_log(
    addr: str,
    ctx: ssl.SSLContext,
    size: str,
    *,
    subscribers: int,
    max_seconds: float,
    job_id: str | None = None,
) -> Stream:
    """Start ``head -c SIZE /dev/zero`` and follow its Log live with
    ``subscribers`` connections (connected beforehand) until the stream ends
    or ``max_seconds`` pass; then Stop the job if it is still running."""
    bytes_each = [0] * subscribers
    seconds_each = [0.0] * subscribers
    t_connect = time.perf_counter()
    async with AsyncExitStack() as stack:
        conns = await _clients(stack, addr, ctx, subscribers)
        connect_s = time.perf_counter() - t_connect
        control = await stack.enter_async_context(RundClient.connect(addr, ctx))
        if job_id is None:  # live: a new job; otherwise replay a finished one
            job_id = await control.start(request("head", "-c", size, "/dev/zero"))
        begin = time.perf_counter()

        async def follow(index: int, conn: RundClient) -> None:
            got = 0
            try:
                async for chunk in conn.log(job_id):
                    got += len(chunk.stdout) + len(chunk.stderr)
            finally:
                bytes_each[index] = got
                seconds_each[index] = time.perf_counter() - begin

        with trio.move_on_after(max_seconds) as scope:
            async with trio.open_nursery() as nursery:
                for index, conn in enumerate(conns):
                    nursery.start_soon(follow, index, conn)
        elapsed = time.perf_counter() - begin
        final = await control.stop(job_id)
        t_close = time.perf_counter()
    close_s = time.perf_counter() - t_close
    return Stream(
        subscribers,
        bytes_each,
        seconds_each,
        elapsed,
        scope.cancelled_caught,
        _status_dict(final),
        connect_s,
        close_s,
    )


def _status_dict(status: pb.JobStatus) -> dict[str, object]:
    out: dict[str, object] = {
        "state": pb.JobState.Name(status.state),
        "output_bytes": status.output_bytes,
        "output_dropped_bytes": status.output_dropped_bytes,
    }
    if status.HasField("started_at") and status.HasField("ended_at"):
        out["run_seconds"] = (
            status.ended_at.ToNanoseconds() - status.started_at.ToNanoseconds()
        ) / 1e9
    return out


async def job_write_time(
    addr: str, ctx: ssl.SSLContext, size: str, max_seconds: float
) -> dict[str, object]:
    """A job writing SIZE bytes to stdout with nobody following its log: its
    own run time (Status ended_at - started_at) and the time from the Start
    call until Status first says it ended (polled every 10 ms)."""
    async with RundClient.connect(addr, ctx) as conn:
        begin = time.perf_counter()
        job_id = await conn.start(request("head", "-c", size, "/dev/zero"))
        seen_end = None
        with trio.move_on_after(max_seconds):
            while (await conn.status(job_id)).state == RUNNING:
                await trio.sleep(0.01)
            seen_end = time.perf_counter() - begin
        final = await conn.stop(job_id)
    result = _status_dict(final)
    result["job_id"] = job_id
    result["start_to_seen_exited_s"] = seen_end
    result["truncated"] = seen_end is None
    return result


async def first_log_chunk(addr: str, ctx: ssl.SSLContext, max_seconds: float) -> dict[str, object]:
    """Start ``sh -c 'echo ready; exec sleep 600'``, then time a fresh Log
    call until its first chunk; the job is stopped afterwards."""
    async with RundClient.connect(addr, ctx) as conn:
        begin = time.perf_counter()
        job_id = await conn.start(request("sh", "-c", "echo ready; exec sleep 600"))
        started = time.perf_counter()
        first = None
        with trio.move_on_after(max_seconds):
            async with aclosing(conn.log(job_id)) as chunks:
                async for _chunk in chunks:
                    first = time.perf_counter()
                    break
        await conn.stop(job_id)
    return {
        "start_ms": (started - begin) * 1000,
        "log_first_chunk_ms": None if first is None else (first - started) * 1000,
    }

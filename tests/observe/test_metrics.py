"""The metrics endpoint of a real daemon: what it counts, and what a bad
scraper cannot do to the daemon."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from rund_trio.api import rund_pb2 as pb
from rund_trio.client.api import RundClient
from rund_trio.errors import RpcError
from rund_trio.observe.config import ObserveConfig
from rund_trio.observe.metrics import DaemonMetrics
from rund_trio.observe.metrics_http import MAX_CONNECTIONS, MAX_HEAD_BYTES
from rund_trio.server.calls import CallRecord
from rund_trio.tls.identity import Identity
from tests.conftest import Daemon, Pki, start_daemon
from tests.observe.scrape import metrics_port, raw_http, scrape

ROOT = Path(__file__).resolve().parents[2]


def rpcs(method: str, code: str) -> str:
    labels = f'grpc_code="{code}",grpc_method="{method}",grpc_service="rund.JobController"'
    return f"rund_rpcs_total{{{labels}}}"


async def metrics_daemon(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, **observe: object
) -> Daemon:
    return await start_daemon(
        nursery,
        pki,
        tmp_path,
        observe=ObserveConfig(metrics_addr="127.0.0.1:0", **observe),  # type: ignore[arg-type]
    )


async def wait_ended(rund: RundClient, job_id: str) -> pb.JobStatus:
    """Once nothing of the job is left (Wait): its end is counted by then; a
    Log that ended, or a Status that says exited, can come before."""
    return await rund.wait(job_id)


async def test_metrics_are_off_by_default(daemon: Daemon) -> None:
    assert daemon.running.observability.metrics_addresses == []


async def test_a_finished_job_is_counted_by_state_stream_and_method(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    async with daemon.client() as rund:
        job = await rund.start(
            pb.JobStartRequest(name="sh", args=["-c", "echo out; echo error >&2"])
        )
        await wait_ended(rund, job)
    metrics = await scrape(daemon)
    assert metrics['rund_jobs{state="exited"}'] == 1
    assert metrics['rund_jobs{state="running"}'] == 0
    assert metrics["rund_jobs_started_total"] == 1
    assert metrics['rund_jobs_ended_total{state="exited"}'] == 1
    assert metrics['rund_job_output_bytes_total{stream="stdout"}'] == 4
    assert metrics['rund_job_output_bytes_total{stream="stderr"}'] == 6
    assert metrics["rund_state_disk_bytes"] == 4 + 6 + 2 * 5  # two records of 5-byte headers
    assert metrics[rpcs("Start", "OK")] == 1
    duration = (
        'rund_rpc_duration_seconds_count{grpc_method="Start",grpc_service="rund.JobController"}'
    )
    assert metrics[duration] == 1
    assert metrics['rund_tls_handshakes_total{outcome="ok"}'] == 1
    assert metrics["rund_connections_total"] == 1
    assert metrics["rund_serving"] == 1


async def test_a_program_that_cannot_run_is_a_spawn_failure_and_its_code(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    async with daemon.client() as rund:
        with pytest.raises(RpcError):
            await rund.start(pb.JobStartRequest(name="/no/such/program"))
    metrics = await scrape(daemon)
    assert metrics["rund_job_spawn_failures_total"] == 1
    assert metrics[rpcs("Start", "FAILED_PRECONDITION")] == 1


async def test_running_jobs_log_subscribers_and_connections_are_read_at_scrape_time(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    async with daemon.client() as rund:
        job = await rund.start(pb.JobStartRequest(name="sh", args=["-c", "echo go; sleep 300"]))
        follower = rund.log(job)
        await follower.__anext__()  # the Log stream is open and has sent the first chunk
        metrics = await scrape(daemon)
        await follower.aclose()
        await rund.stop(job)
    assert metrics['rund_jobs{state="running"}'] == 1
    assert metrics["rund_log_subscribers"] == 1
    assert metrics["rund_connections_open"] == 1
    assert metrics[f'rund_job_memory_bytes{{job_id="{job}"}}'] >= 0
    assert f'rund_job_cpu_seconds_total{{job_id="{job}"}}' in metrics


async def test_per_job_series_are_capped_and_the_aggregates_count_every_job(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path, metrics_max_job_series=1)
    async with daemon.client() as rund:
        first = await rund.start(pb.JobStartRequest(name="sleep", args=["300"]))
        second = await rund.start(pb.JobStartRequest(name="sleep", args=["300"]))
        metrics = await scrape(daemon)
        for job in (first, second):
            await rund.stop(job)
    per_job = [name for name in metrics if name.startswith("rund_job_memory_bytes{")]
    assert per_job == [f'rund_job_memory_bytes{{job_id="{first}"}}']  # the longest running
    assert metrics['rund_jobs{state="running"}'] == 2
    assert "rund_jobs_memory_bytes" in metrics and "rund_jobs_cpu_seconds_total" in metrics


def test_calls_of_methods_the_daemon_does_not_serve_share_one_label() -> None:
    metrics = DaemonMetrics(process=False)
    metrics.attach(_NoState(), served_methods=["/rund.JobController/Start"])
    for path in ("/a/b", "/c/d", "/rund.JobController/Start"):
        metrics.call_finished(
            CallRecord(path, "127.0.0.1:1", Identity(), "", None, "UNIMPLEMENTED", "", 0.0, 0.001)
        )
    labels = {
        tuple(sorted(sample.labels.items()))
        for family in metrics.registry.collect()
        if family.name == "rund_rpcs"
        for sample in family.samples
    }
    assert labels == {
        (("grpc_code", "UNIMPLEMENTED"), ("grpc_method", "unknown"), ("grpc_service", "unknown")),
        (
            ("grpc_code", "UNIMPLEMENTED"),
            ("grpc_method", "Start"),
            ("grpc_service", "rund.JobController"),
        ),
    }


class _NoState:
    jobs: tuple[object, ...] = ()
    log_subscribers = 0
    serving = True

    def retained(self) -> tuple[dict[object, int], int]:
        return {}, 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * (4 * MAX_HEAD_BYTES)
            + b"\r\n\r\n",
            b"431",
        ),
        (b"GET /" + b"a" * (1024 * 1024), b"431"),
        (b"\x16\x03\x01 not http at all\r\n\r\n", b"400"),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    ],
    ids=["huge-header", "endless-request-line", "garbage", "post", "wrong-path"],
)
async def test_a_bad_scrape_gets_an_error_and_the_daemon_keeps_serving(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path, request_bytes: bytes, status: bytes
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    answer = await raw_http(metrics_port(daemon), request_bytes)
    assert answer.split(b" ")[1] == status
    async with daemon.client() as rund:
        job = await rund.start(pb.JobStartRequest(name="true"))
        assert (await wait_ended(rund, job)).exit_code.value == 0
    assert "rund_jobs_started_total" in await scrape(daemon)


async def test_silent_scrapers_beyond_the_cap_are_closed_and_jobs_still_run(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    port = metrics_port(daemon)
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(10):
        assert await extra.receive_some(10) == b""  # closed at once
    async with daemon.client() as rund:
        job = await rund.start(pb.JobStartRequest(name="true"))
        assert (await wait_ended(rund, job)).exit_code.value == 0
    for stream in silent:
        await stream.aclose()
    await extra.aclose()
    with trio.fail_after(10):
        while True:  # the held slots are freed as the daemon sees the closes
            answer = await raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            if answer:
                break
            await trio.sleep(0.01)
    assert answer.startswith(b"HTTP/1.1 200")


async def test_metrics_over_mutual_tls_need_a_client_certificate(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path, metrics_tls=True)
    metrics = await scrape(daemon, ssl_context=pki.client_tls("bob").client_context())
    assert metrics["rund_serving"] == 1
    plain = await raw_http(metrics_port(daemon), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not plain.startswith(b"HTTP")
    no_certificate = ssl.create_default_context(cafile=str(pki.files.ca.cert))
    with pytest.raises(trio.BrokenResourceError):
        await raw_http(
            metrics_port(daemon),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            ssl_context=no_certificate,
        )


def test_the_grafana_dashboard_queries_only_metrics_the_daemon_exports() -> None:
    import json
    import re

    from rund_trio.observe.audit import AuditCollector
    from rund_trio.observe.audit_log import AuditLog

    dashboard = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in expressions for name in re.findall(r"\b((?:rund|process)_\w+)\{", e)}
    metrics = DaemonMetrics()
    metrics.register(AuditCollector(AuditLog("-")))
    metrics.call_finished(  # labelled series exist once one call is counted
        CallRecord("/a/b", "127.0.0.1:1", Identity(), "", None, "OK", "", 0.0, 0.001)
    )
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert used and used <= exported, used - exported


async def test_refused_and_timed_out_handshakes_are_counted_by_outcome(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    from rund_trio.rpc import TransportConfig

    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        transport=TransportConfig(handshake_timeout=0.2),
        observe=ObserveConfig(metrics_addr="127.0.0.1:0"),
    )
    async with await trio.open_tcp_stream("127.0.0.1", daemon.port) as garbage:
        await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n")
        with trio.fail_after(10):
            assert await garbage.receive_some(100) == b""  # refused and closed
    async with await trio.open_tcp_stream("127.0.0.1", daemon.port) as silent:
        with trio.fail_after(10):
            assert await silent.receive_some(100) == b""  # closed after 0.2 s
    metrics = await scrape(daemon)
    assert metrics['rund_tls_handshakes_total{outcome="refused"}'] == 1
    assert metrics['rund_tls_handshakes_total{outcome="timed_out"}'] == 1
    assert metrics['rund_tls_handshakes_total{outcome="ok"}'] == 0
    assert metrics["rund_connections_total"] == 2


async def test_a_connection_shed_by_the_admission_caps_is_counted_as_a_shed_handshake(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    from rund_trio.rpc import TransportConfig
    from rund_trio.server.admission import AdmissionLimits

    daemon = await start_daemon(
        nursery,
        pki,
        tmp_path,
        transport=TransportConfig(handshake_timeout=600),
        admission=AdmissionLimits(max_handshakes=1, fd_reserve=0),
        observe=ObserveConfig(metrics_addr="127.0.0.1:0"),
    )
    with socket.create_connection(("127.0.0.1", daemon.port)):  # holds the one handshake
        await trio.testing.wait_all_tasks_blocked()
        with socket.create_connection(("127.0.0.1", daemon.port)):
            await trio.testing.wait_all_tasks_blocked()
        metrics = await scrape(daemon)
        assert metrics['rund_tls_handshakes_total{outcome="shed"}'] == 1
        assert metrics["rund_connections_total"] == 2
        assert metrics["rund_connections_open"] == 1


async def test_a_collector_that_fails_is_a_500_and_the_daemon_keeps_serving(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    daemon = await metrics_daemon(nursery, pki, tmp_path)
    metrics = daemon.running.observability.metrics
    assert metrics is not None
    metrics.register(_Broken())
    answer = await raw_http(metrics_port(daemon), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500")
    async with daemon.client() as rund:
        job = await rund.start(pb.JobStartRequest(name="true"))
        assert (await wait_ended(rund, job)).exit_code.value == 0


class _Broken:
    def collect(self) -> list[object]:
        raise RuntimeError("a bug")

    def describe(self) -> list[object]:
        return []

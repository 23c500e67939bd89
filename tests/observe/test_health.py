"""The standard gRPC health service, driven by grpcio's own health client
(grpcio-health-checking's generated stub and messages)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Pki, start_daemon
from tests.observe.grpcio_helpers import blocking, grpcio_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", "rund.JobController"])
async def test_check_says_serving_once_jobs_can_start(
    nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path, service: str
) -> None:
    daemon = await start_daemon(nursery, pki_p384, tmp_path)
    with grpcio_channel(daemon) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await blocking(stub.Check, health_pb2.HealthCheckRequest(service=service))
    assert response.status == SERVING


async def test_check_of_an_unknown_service_is_not_found(
    nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki_p384, tmp_path)
    with grpcio_channel(daemon) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            await blocking(stub.Check, health_pb2.HealthCheckRequest(service="nope.Nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope.Nope" in error.value.details()


async def test_list_reports_every_service(
    nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki_p384, tmp_path)
    with grpcio_channel(daemon) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await blocking(stub.List, health_pb2.HealthListRequest())
    assert {name: status.status for name, status in response.statuses.items()} == {
        "": SERVING,
        "rund.JobController": SERVING,
    }


async def test_watch_sees_serving_then_not_serving_when_the_daemon_shuts_down(
    pki_p384: Pki, tmp_path: Path
) -> None:
    async with trio.open_nursery() as outer:
        daemon_scope = trio.CancelScope()

        async def run_daemon(task_status: trio.TaskStatus[object]) -> None:
            with daemon_scope:
                async with trio.open_nursery() as daemon_nursery:
                    task_status.started(await start_daemon(daemon_nursery, pki_p384, tmp_path))

        daemon = await outer.start(run_daemon)
        with grpcio_channel(daemon) as channel:  # type: ignore[arg-type]
            stub = health_pb2_grpc.HealthStub(channel)
            responses = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await blocking(next, responses)
            assert first.status == SERVING
            daemon_scope.cancel()
            second = await blocking(next, responses)
            assert second.status == NOT_SERVING
            responses.cancel()


async def test_watch_of_an_unknown_service_says_service_unknown(
    nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path
) -> None:
    daemon = await start_daemon(nursery, pki_p384, tmp_path)
    with grpcio_channel(daemon) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        responses = stub.Watch(health_pb2.HealthCheckRequest(service="nope.Nope"))
        first = await blocking(next, responses)
        responses.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

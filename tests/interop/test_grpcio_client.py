"""An independent gRPC implementation (grpcio, with stubs generated from
proto/rund.proto at test time) drives the daemon. grpcio's BoringSSL cannot
handshake with a P-521 server key, so this daemon runs with a P-384 one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc
import pytest
import trio

from rund_trio.api import rund_pb2 as pb
from tests.conftest import Daemon, Pki, start_daemon

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture(scope="module")
def grpc_stubs(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    out = tmp_path_factory.mktemp("grpcio_stubs")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--grpc_python_out={out}",
            "rund.proto",
        ],
        check=True,
    )
    sys.modules.setdefault("rund_pb2", pb)  # the generated stub imports it by this name
    spec = importlib.util.spec_from_file_location("rund_pb2_grpc", out / "rund_pb2_grpc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def daemon(nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path) -> AsyncIterator[Daemon]:
    yield await start_daemon(nursery, pki_p384, tmp_path)


@pytest.fixture
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    tls = daemon.pki.client_tls("alice")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{daemon.port}", credentials) as channel:
        yield channel


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """grpcio blocks; the daemon runs in this trio loop, so call it from a thread."""
    return await trio.to_thread.run_sync(lambda: fn(*args))


async def test_grpcio_client_runs_start_status_log_stop(
    grpc_stubs: ModuleType, channel: grpc.Channel
) -> None:
    stub = grpc_stubs.JobControllerStub(channel)
    job = await blocking(
        stub.Start, pb.JobStartRequest(name="sh", args=["-c", "echo hi; sleep 300"])
    )
    status = await blocking(stub.Status, pb.JobIdentifier(ulid=job.ulid))
    assert status.state == pb.JOB_STATE_RUNNING

    def first_chunk() -> bytes:
        call = stub.Log(pb.JobIdentifier(ulid=job.ulid))
        chunk = next(call).stdout
        call.cancel()
        return bytes(chunk)

    assert await blocking(first_chunk) == b"hi\n"
    stopped = await blocking(stub.Stop, pb.JobStopRequest(ulid=job.ulid))
    assert (stopped.stopped, stopped.killed) == (True, True)

    def whole_log() -> bytes:
        return b"".join(chunk.stdout for chunk in stub.Log(pb.JobIdentifier(ulid=job.ulid)))

    assert await blocking(whole_log) == b"hi\n"


async def test_a_contract_client_stops_with_a_plain_job_identifier(
    grpc_stubs: ModuleType, channel: grpc.Channel
) -> None:
    stub = grpc_stubs.JobControllerStub(channel)
    job = await blocking(stub.Start, pb.JobStartRequest(name="sleep", args=["300"]))
    contract_stop = channel.unary_unary(
        "/rund.JobController/Stop",
        request_serializer=pb.JobIdentifier.SerializeToString,
        response_deserializer=pb.JobStatus.FromString,
    )
    status = await blocking(contract_stop, pb.JobIdentifier(ulid=job.ulid))
    assert status.stopped


async def test_a_reset_log_stream_ends_its_handler_while_the_connection_stays(
    grpc_stubs: ModuleType, channel: grpc.Channel, daemon: Daemon
) -> None:
    stub = grpc_stubs.JobControllerStub(channel)
    job = await blocking(stub.Start, pb.JobStartRequest(name="sleep", args=["300"]))
    call = stub.Log(pb.JobIdentifier(ulid=job.ulid))
    await blocking(call.initial_metadata)
    assert daemon.running.server.requests == 1
    call.cancel()  # RST_STREAM
    with trio.fail_after(10):
        while daemon.running.server.requests:
            await daemon.running.server.wait_until_requests_change()
    assert daemon.running.server.connections == 1


async def test_a_deadline_ends_a_waiting_log_with_deadline_exceeded(
    grpc_stubs: ModuleType, channel: grpc.Channel
) -> None:
    stub = grpc_stubs.JobControllerStub(channel)
    job = await blocking(stub.Start, pb.JobStartRequest(name="sleep", args=["300"]))

    def log_with_deadline() -> grpc.StatusCode:
        try:
            for _ in stub.Log(pb.JobIdentifier(ulid=job.ulid), timeout=0.3):
                pass
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert await blocking(log_with_deadline) == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_an_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    method = channel.unary_unary("/rund.JobController/Nope")
    with pytest.raises(grpc.RpcError) as error:
        await blocking(method, b"")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_malformed_request_body_is_invalid_argument(channel: grpc.Channel) -> None:
    method = channel.unary_unary("/rund.JobController/Start")
    with pytest.raises(grpc.RpcError) as error:
        await blocking(method, b"\xff\xff\xff")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "JobStartRequest" in error.value.details()

"""Server reflection, driven by grpcio-reflection's own client (v1alpha, as
grpcurl and most tools still speak it) and by a plain grpcio stream (v1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import trio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from rund_trio.api.grpc_reflection.v1 import reflection_pb2 as v1
from tests.conftest import Daemon, Pki, start_daemon
from tests.observe.grpcio_helpers import blocking, grpcio_channel

SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "rund.JobController",
]


@pytest.fixture
async def daemon(nursery: trio.Nursery, pki_p384: Pki, tmp_path: Path) -> AsyncIterator[Daemon]:
    yield await start_daemon(nursery, pki_p384, tmp_path)


@pytest.fixture
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    with grpcio_channel(daemon) as channel:
        yield channel


async def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert sorted(await blocking(database.get_services)) == SERVICES


async def test_a_client_builds_the_job_service_from_reflection_alone(
    channel: grpc.Channel,
) -> None:
    """As grpcurl does: a private pool fed only by the daemon's answers."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = await blocking(pool.FindServiceByName, "rund.JobController")
    assert {"Start", "Stop", "Status", "Log"} <= set(service.methods_by_name)
    start = service.methods_by_name["Start"]
    assert start.input_type.full_name == "rund.JobStartRequest"
    # Its imports (wrappers, durations) came along.
    assert start.input_type.fields_by_name["max_memory_usage"].message_type.full_name == (
        "google.protobuf.UInt64Value"
    )
    health = await blocking(pool.FindServiceByName, "grpc.health.v1.Health")
    assert set(health.methods_by_name) >= {"Check", "Watch"}


async def test_a_method_name_finds_its_file(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    file = await blocking(database.FindFileContainingSymbol, "rund.JobController.Start")
    assert file.name == "rund.proto"


async def test_an_unknown_symbol_is_not_found(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    with pytest.raises(KeyError):
        await blocking(database.FindFileContainingSymbol, "nope.Nope")


def ask_v1(channel: grpc.Channel, requests: list[v1.ServerReflectionRequest]) -> list[object]:
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=v1.ServerReflectionRequest.SerializeToString,
        response_deserializer=v1.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests)))


async def test_v1_answers_each_request_of_a_stream_in_order(channel: grpc.Channel) -> None:
    responses = await blocking(
        ask_v1,
        channel,
        [
            v1.ServerReflectionRequest(list_services=""),
            v1.ServerReflectionRequest(file_by_filename="rund.proto"),
            v1.ServerReflectionRequest(file_containing_symbol="nope.Nope"),
        ],
    )
    listed, by_name, unknown = responses
    assert sorted(s.name for s in listed.list_services_response.service) == SERVICES  # type: ignore[attr-defined]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in by_name.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
    ]
    assert files[0].name == "rund.proto"
    assert "google/protobuf/wrappers.proto" in {file.name for file in files}
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]  # type: ignore[attr-defined]

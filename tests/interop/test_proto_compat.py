"""proto/rund.proto stays wire-compatible with the contract in
../shared/spec/rund.proto, and rund_trio/api/ is generated from it."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec" / "rund.proto"
OURS = ROOT / "proto" / "rund.proto"


def descriptor_set(proto: Path, tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / f"{proto.parent.name}.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"--descriptor_set_out={out}",
            proto.name,
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = files.file
    return file


@pytest.fixture(scope="module")
def spec_and_ours(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[descriptor_pb2.FileDescriptorProto, descriptor_pb2.FileDescriptorProto]:
    if not SPEC.exists():
        pytest.fail(f"the wire contract {SPEC} is missing: ../shared must sit beside the repo")
    tmp = tmp_path_factory.mktemp("descriptors")
    return descriptor_set(SPEC, tmp), descriptor_set(OURS, tmp)


def test_package_is_the_contracts(spec_and_ours: tuple) -> None:  # type: ignore[type-arg]
    spec, ours = spec_and_ours
    assert ours.package == spec.package == "rund"


def test_every_message_field_of_the_contract_keeps_name_number_type_and_label(
    spec_and_ours: tuple,  # type: ignore[type-arg]
) -> None:
    spec, ours = spec_and_ours
    our_messages = {message.name: message for message in ours.message_type}
    for message in spec.message_type:
        assert message.name in our_messages, f"message {message.name} was removed"
        our_fields = {field.number: field for field in our_messages[message.name].field}
        for field in message.field:
            ours_field = our_fields.get(field.number)
            assert ours_field is not None, f"{message.name}.{field.name} was removed"
            assert (ours_field.name, ours_field.type, ours_field.type_name, ours_field.label) == (
                field.name,
                field.type,
                field.type_name,
                field.label,
            ), f"{message.name}.{field.name} changed"


def test_every_rpc_of_the_contract_keeps_its_shape_on_the_wire(
    spec_and_ours: tuple,  # type: ignore[type-arg]
) -> None:
    spec, ours = spec_and_ours
    our_messages = {f".rund.{message.name}": message for message in ours.message_type}
    spec_messages = {f".rund.{message.name}": message for message in spec.message_type}
    (spec_service,) = spec.service
    our_service = {service.name: service for service in ours.service}[spec_service.name]
    our_methods = {method.name: method for method in our_service.method}
    for method in spec_service.method:
        ours_method = our_methods[method.name]
        assert (ours_method.client_streaming, ours_method.server_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )
        assert ours_method.output_type == method.output_type
        if ours_method.input_type != method.input_type:
            # Allowed: a request message that keeps the contract's fields.
            spec_fields = {
                (f.number, f.name, f.type) for f in spec_messages[method.input_type].field
            }
            our_fields = {
                (f.number, f.name, f.type) for f in our_messages[ours_method.input_type].field
            }
            assert spec_fields <= our_fields, f"{method.name}'s request lost a contract field"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, env=env)
    generated = [
        f"{stem}{suffix}"
        for stem in (
            "rund",
            "grpc_health/v1/health",
            "grpc_reflection/v1/reflection",
            "grpc_reflection/v1alpha/reflection",
        )
        for suffix in ("_pb2.py", "_pb2.pyi", "_grpc.py")
    ]
    for name in generated:
        assert filecmp.cmp(tmp_path / name, ROOT / "rund_trio" / "api" / name, shallow=False), (
            f"rund_trio/api/{name} is stale: run `just proto`"
        )

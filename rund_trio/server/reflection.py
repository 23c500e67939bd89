"""gRPC server reflection (``grpc.reflection.v1`` and ``v1alpha``), so that
grpcurl and other generic clients can list and describe the daemon's services
without a copy of its .proto files.

Answers come from protobuf's default descriptor pool, where every generated
module registers its file: each file descriptor is sent with the files it
imports (transitively), so a client can build every type it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor

from rund_trio.api.grpc_reflection.v1 import reflection_pb2 as v1
from rund_trio.api.grpc_reflection.v1.reflection_grpc import (
    ServerReflectionServicer as V1Servicer,
)
from rund_trio.api.grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from rund_trio.api.grpc_reflection.v1alpha.reflection_grpc import (
    ServerReflectionServicer as V1AlphaServicer,
)
from rund_trio.rpc import Service, StatusCode

REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


class _NotFound(Exception):
    pass


class Reflection:
    """What the reflection services describe: the services the daemon serves
    and every file they are defined in."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self._services = sorted({*service_names, *REFLECTION_SERVICES})
        self._pool = descriptor_pool.Default()

    def services(self) -> list[Service]:
        """The v1 and v1alpha reflection services, to serve beside the others."""
        return [_V1(self).service, _V1Alpha(self).service]

    def list_services(self) -> list[str]:
        return self._services

    def _with_dependencies(self, file: FileDescriptor) -> list[bytes]:
        """``file`` serialized, then every file it imports, each once."""
        seen: dict[str, bytes] = {}
        pending = [file]
        while pending:
            current = pending.pop(0)
            if current.name in seen:
                continue
            proto = descriptor_pb2.FileDescriptorProto()
            current.CopyToProto(proto)
            seen[current.name] = proto.SerializeToString()
            pending.extend(current.dependencies)
        return list(seen.values())

    def file_by_filename(self, name: str) -> list[bytes]:
        try:
            return self._with_dependencies(self._pool.FindFileByName(name))
        except KeyError:
            raise _NotFound(f"no file {name!r}") from None

    def file_containing_symbol(self, symbol: str) -> list[bytes]:
        try:
            return self._with_dependencies(self._pool.FindFileContainingSymbol(symbol))
        except KeyError:
            pass
        # The pool does not index methods: ``package.Service.Method``.
        service_name, _, method = symbol.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            service = None
        if service is None or method not in service.methods_by_name:
            raise _NotFound(f"no symbol {symbol!r}")
        return self._with_dependencies(service.file)

    def extension_numbers(self, type_name: str) -> list[int]:
        try:
            message = self._pool.FindMessageTypeByName(type_name)
        except KeyError:
            raise _NotFound(f"no message type {type_name!r}") from None
        return sorted(ext.number for ext in self._pool.FindAllExtensions(message))

    def answer(self, pb: Any, request: Any) -> Any:
        """The response to one request, in the messages of module ``pb`` (v1 or
        v1alpha: the same fields). Unknown names are NOT_FOUND error responses
        on the stream, as gRPC's own servers answer."""
        response = pb.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                for name in self._services:
                    response.list_services_response.service.add(name=name)
            elif kind == "file_by_filename":
                files = self.file_by_filename(request.file_by_filename)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif kind == "file_containing_symbol":
                files = self.file_containing_symbol(request.file_containing_symbol)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif kind == "all_extension_numbers_of_type":
                type_name = request.all_extension_numbers_of_type
                numbers = self.extension_numbers(type_name)
                response.all_extension_numbers_response.base_type_name = type_name
                response.all_extension_numbers_response.extension_number.extend(numbers)
            elif kind == "file_containing_extension":
                # No file of the daemon's declares extensions.
                extension = request.file_containing_extension
                raise _NotFound(
                    f"no extension {extension.extension_number} of {extension.containing_type!r}"
                )
            else:
                response.error_response.error_code = StatusCode.INVALID_ARGUMENT.value
                response.error_response.error_message = "the request asks for nothing"
        except _NotFound as error:
            response.error_response.error_code = StatusCode.NOT_FOUND.value
            response.error_response.error_message = str(error)
        return response


class _V1(V1Servicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, reflection: Reflection) -> None:
        self._reflection = reflection

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[v1.ServerReflectionRequest]
    ) -> AsyncIterator[v1.ServerReflectionResponse]:
        async for request in requests:
            yield self._reflection.answer(v1, request)


class _V1Alpha(V1AlphaServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, reflection: Reflection) -> None:
        self._reflection = reflection

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[v1alpha.ServerReflectionRequest]
    ) -> AsyncIterator[v1alpha.ServerReflectionResponse]:
        async for request in requests:
            yield self._reflection.answer(v1alpha, request)

"""Server reflection, as `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

Clients try v1 first (grpcurl, buf curl, Postman) and fall back to v1alpha;
both are answered by one servicer from the process's descriptor pool, since
the two protocols' messages are the same on the wire. The v1 file is derived
from the v1alpha one (grpcio-reflection ships only v1alpha), so that
`describe grpc.reflection.v1.ServerReflection` works like any other service.

Beyond the library's servicer: a method's full name (`pkg.Service.Method`,
which `grpcurl describe` asks for) resolves to its service's file, and the
google.rpc error detail messages are always in the pool, so a client can
decode the details of an error by reflection alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
_METHOD = "ServerReflectionInfo"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
# Files served even though no service's file imports them.
ERROR_DETAIL_FILES = (error_details_pb2.DESCRIPTOR.name,)


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Add grpc/reflection/v1/reflection.proto to `pool` (once), renamed from v1alpha."""
    with contextlib.suppress(KeyError):
        pool.FindFileByName(_V1_FILE)
        return  # added by an earlier server of this process
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)


def _with_dependencies(
    file: descriptor.FileDescriptor, seen: dict[str, descriptor.FileDescriptor]
) -> None:
    seen[file.name] = file
    for dependency in file.dependencies:
        if dependency.name not in seen:
            _with_dependencies(dependency, seen)


class ReflectionServicer:
    """Answers both reflection protocols from a descriptor pool."""

    def __init__(self, service_names: Iterable[str], pool: descriptor_pool.DescriptorPool) -> None:
        self._services = sorted({*service_names, *SERVICE_NAMES})
        self._pool = pool
        for name in ERROR_DETAIL_FILES:
            pool.FindFileByName(name)  # fails at start-up, not on a client's call

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[pb.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                return pb.ServerReflectionResponse(
                    original_request=request,
                    list_services_response=pb.ListServiceResponse(
                        service=[pb.ServiceResponse(name=name) for name in self._services]
                    ),
                )
            if kind == "file_by_filename":
                return self._files(request, self._pool.FindFileByName(request.file_by_filename))
            if kind == "file_containing_symbol":
                return self._files(request, self._file_of(request.file_containing_symbol))
            if kind == "file_containing_extension":
                asked = request.file_containing_extension
                message = self._pool.FindMessageTypeByName(asked.containing_type)
                extension = self._pool.FindExtensionByNumber(message, asked.extension_number)
                return self._files(
                    request, self._pool.FindFileContainingSymbol(extension.full_name)
                )
            if kind == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = sorted(ext.number for ext in self._pool.FindAllExtensions(message))
                return pb.ServerReflectionResponse(
                    original_request=request,
                    all_extension_numbers_response=pb.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                )
        except KeyError:
            return self._error(request, grpc.StatusCode.NOT_FOUND, "not found")
        return self._error(request, grpc.StatusCode.INVALID_ARGUMENT, "unknown request")

    def _file_of(self, symbol: str) -> descriptor.FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            # The pool does not index methods: `pkg.Service.Method` is its service's.
            service_name, _, method = symbol.rpartition(".")
            service = self._pool.FindServiceByName(service_name)
            if method not in service.methods_by_name:
                raise
            return service.file

    @staticmethod
    def _files(
        request: pb.ServerReflectionRequest, file: descriptor.FileDescriptor
    ) -> pb.ServerReflectionResponse:
        files: dict[str, descriptor.FileDescriptor] = {}
        _with_dependencies(file, files)
        serialized = []
        for found in files.values():
            proto = descriptor_pb2.FileDescriptorProto()
            found.CopyToProto(proto)
            serialized.append(proto.SerializeToString())
        return pb.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=pb.FileDescriptorResponse(file_descriptor_proto=serialized),
        )

    @staticmethod
    def _error(
        request: pb.ServerReflectionRequest, code: grpc.StatusCode, message: str
    ) -> pb.ServerReflectionResponse:
        return pb.ServerReflectionResponse(
            original_request=request,
            error_response=pb.ErrorResponse(error_code=code.value[0], error_message=message),
        )


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.aio.Server,
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Serve reflection v1 and v1alpha on `server` for `service_names` (and itself)."""
    pool = pool or descriptor_pool.Default()
    _add_v1_file(pool)
    servicer = ReflectionServicer(service_names, pool)
    handlers = {
        _METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=pb.ServerReflectionRequest.FromString,
            response_serializer=pb.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)

"""gRPC server reflection (v1 and v1alpha, the same messages) from the SDK's
descriptors, so grpcurl can call a Python plugin by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from . import _proto

_NOT_FOUND = 5
_UNIMPLEMENTED = 12


def _with_dependencies(name: str) -> list[bytes]:
    seen: list[str] = []

    def visit(file_name: str) -> None:
        if file_name in seen:
            return
        seen.append(file_name)
        for dependency in _proto.POOL.FindFileByName(file_name).dependencies:
            visit(dependency.name)

    visit(name)
    return [_proto.FILES[file] for file in seen]


def reflection_handlers(services: Sequence[str]) -> list[Any]:
    """Generic handlers of both reflection services, listing ``services``."""
    handlers = []
    for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
        request_class = _proto.message(package + ".ServerReflectionRequest")
        response_class = _proto.message(package + ".ServerReflectionResponse")

        def answer(request: Any, response_class: Any = response_class) -> Any:
            response = response_class(valid_host=request.host, original_request=request)
            kind = request.WhichOneof("message_request")
            try:
                if kind == "list_services":
                    for name in services:
                        response.list_services_response.service.add(name=name)
                elif kind == "file_by_filename":
                    response.file_descriptor_response.file_descriptor_proto.extend(
                        _with_dependencies(request.file_by_filename)
                    )
                elif kind == "file_containing_symbol":
                    symbol = request.file_containing_symbol
                    file = _proto.POOL.FindFileContainingSymbol(symbol).name
                    response.file_descriptor_response.file_descriptor_proto.extend(
                        _with_dependencies(file)
                    )
                else:
                    response.error_response.error_code = _UNIMPLEMENTED
                    response.error_response.error_message = f"{kind} is not supported"
            except KeyError as error:
                response.ClearField("message_response")
                response.error_response.error_code = _NOT_FOUND
                response.error_response.error_message = f"not found: {error}"
            return response

        async def info(
            requests: AsyncIterator[Any], context: Any, answer: Any = answer
        ) -> AsyncIterator[Any]:
            async for request in requests:
                yield answer(request)

        handlers.append(
            grpc.method_handlers_generic_handler(
                package + ".ServerReflection",
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        info,
                        request_deserializer=request_class.FromString,
                        response_serializer=response_class.SerializeToString,
                    )
                },
            )
        )
    return handlers

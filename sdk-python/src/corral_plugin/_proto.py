"""Corral's gRPC contract without generated code.

The descriptors come from ``descriptors.binpb``, a copy of what the Rust build
compiles from ``proto/`` (a Rust test keeps the two equal). Message classes are
made from them at import time; services are served with generic handlers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTOCOL_VERSION = 2
"""The plugin protocol this SDK speaks (a step ends the call)."""

MAX_STATE_BYTES = 1024 * 1024
"""The largest state (JSON) a step or checkpoint may carry."""

MAX_CHUNK = 1024 * 1024
"""The largest chunk of an output file in one event."""


def _load() -> tuple[descriptor_pool.DescriptorPool, dict[str, bytes]]:
    raw = Path(__file__).with_name("descriptors.binpb").read_bytes()
    files = list(descriptor_pb2.FileDescriptorSet.FromString(raw).file)
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    encoded: dict[str, bytes] = {}
    # Dependencies first, whatever order the set has.
    while files:
        ready = [f for f in files if all(d in added for d in f.dependency)]
        if not ready:
            raise RuntimeError("descriptors.binpb has a dependency it does not hold")
        for file in ready:
            if file.name not in added:
                pool.Add(file)
                added.add(file.name)
                encoded[file.name] = file.SerializeToString()
            files.remove(file)
    return pool, encoded


POOL, FILES = _load()


def message(full_name: str) -> Any:
    """The message class of ``full_name`` (e.g. ``corral.plugin.v1.LogLine``)."""
    descriptor = POOL.FindMessageTypeByName(full_name)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(POOL).GetPrototype(descriptor)  # protobuf < 4.21


def enum_value(enum: str, name: str) -> int:
    """The number of value ``name`` of enum ``enum``."""
    return int(POOL.FindEnumTypeByName(enum).values_by_name[name].number)


_P = "corral.plugin.v1."
PluginMetadata = message(_P + "PluginMetadata")
GetMetadataRequest = message(_P + "GetMetadataRequest")
FormField = message(_P + "FormField")
Choice = message(_P + "Choice")
Link = message(_P + "Link")
DataInput = message(_P + "DataInput")
DataOutput = message(_P + "DataOutput")
PluginDependency = message(_P + "PluginDependency")
InvokeRequest = message(_P + "InvokeRequest")
InvokeEvent = message(_P + "InvokeEvent")
LogLine = message(_P + "LogLine")
Progress = message(_P + "Progress")
OutputBegin = message(_P + "OutputBegin")
OutputChunk = message(_P + "OutputChunk")
OutputEnd = message(_P + "OutputEnd")
StepRequired = message(_P + "StepRequired")
Checkpoint = message(_P + "Checkpoint")
TaskResult = message(_P + "TaskResult")
TaskError = message(_P + "TaskError")
RenderRequest = message(_P + "RenderRequest")
RenderResponse = message(_P + "RenderResponse")

RegisterRequest = message("corral.supervisor.v1.RegisterRequest")
RegisterResponse = message("corral.supervisor.v1.RegisterResponse")

HealthCheckRequest = message("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = message("grpc.health.v1.HealthCheckResponse")
SERVING = enum_value("grpc.health.v1.HealthCheckResponse.ServingStatus", "SERVING")
NOT_SERVING = enum_value("grpc.health.v1.HealthCheckResponse.ServingStatus", "NOT_SERVING")


def field_kind(name: str) -> int:
    """The number of ``FIELD_KIND_<name>``."""
    return enum_value(_P + "FieldKind", "FIELD_KIND_" + name)


def plugin_type(name: str) -> int:
    """The number of ``PLUGIN_TYPE_<name>``."""
    return enum_value(_P + "PluginType", "PLUGIN_TYPE_" + name)

"""Testing a plugin without a supervisor: the plugin serves on loopback in this
process, over real gRPC, and each call is driven the way the gateway drives it.

    def test_greets():
        with PluginHarness(plugin) as harness:
            run = harness.run({"name": "Ada"})
            assert run.status == "SUCCESS"
            assert run.outputs["hello.txt"].text == "Hello Ada"

With pytest, the ``corral_harness`` fixture makes harnesses and closes them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from . import _proto
from ._runtime import Runtime, install_task_logging
from .plugin import Plugin


@dataclass
class Output:
    """An output file a call wrote."""

    name: str
    data_type: str
    content_type: str
    data: bytes = b""
    chunks: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Step:
    """The step a call ended with."""

    step_id: str
    fields: list[Any]
    state: str

    @property
    def keys(self) -> list[str]:
        return [f.field for f in self.fields]


@dataclass
class TaskRun:
    """What one call of a task did, as the gateway would have seen it."""

    status: str
    """``SUCCESS``, ``FAILURE``, ``STEP`` (waiting for a step) or ``CANCELLED``."""
    log: list[str] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)
    outputs: dict[str, Output] = field(default_factory=dict)
    checkpoints: list[Any] = field(default_factory=list)
    error: str | None = None
    step: Step | None = None
    request: Any = None


class PluginHarness:
    """Serves ``plugin`` on 127.0.0.1 in a thread of its own; :meth:`run` calls it."""

    def __init__(self, plugin: Plugin, *, threads: int | None = None) -> None:
        install_task_logging()
        self.runtime = Runtime(plugin, threads=threads)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server, self.port = asyncio.run_coroutine_threadsafe(
            self.runtime.start("127.0.0.1:0"), self._loop
        ).result()
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.address)
        self._invoke = self.channel.unary_stream(
            "/corral.plugin.v1.Plugin/Invoke",
            request_serializer=_proto.InvokeRequest.SerializeToString,
            response_deserializer=_proto.InvokeEvent.FromString,
        )
        self._task_ids = 0
        self._closed = False

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the server as SIGTERM would (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        self.channel.close()
        stopping = asyncio.run_coroutine_threadsafe(
            self.runtime.stop(self._server, 1.0), self._loop
        )
        stopping.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def unary(self, method: str, request: Any, response: Any, timeout: float = 10) -> Any:
        """Calls a unary method, e.g. ``("/grpc.health.v1.Health/Check", ...)``."""
        call = self.channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        return call(request, timeout=timeout)

    def metadata(self) -> Any:
        return self.unary(
            "/corral.plugin.v1.Plugin/GetMetadata",
            _proto.GetMetadataRequest(),
            _proto.PluginMetadata,
        )

    def render(self, values: Mapping[str, str]) -> str:
        response = self.unary(
            "/corral.plugin.v1.Plugin/Render",
            _proto.RenderRequest(inputs=dict(values)),
            _proto.RenderResponse,
        )
        return str(response.html)

    def request(
        self,
        inputs: Mapping[str, Any],
        *,
        task_id: str | None = None,
        step_id: str = "",
        step_inputs: Mapping[str, Any] | None = None,
        state: str = "",
        attempt: int = 1,
    ) -> Any:
        """The ``InvokeRequest`` the gateway would send (values as strings)."""
        if task_id is None:
            self._task_ids += 1
            task_id = f"test-{self._task_ids}"
        return _proto.InvokeRequest(
            task_id=task_id,
            inputs={k: _text(v) for k, v in inputs.items()},
            step_id=step_id,
            step_inputs={k: _text(v) for k, v in (step_inputs or {}).items()},
            state=state,
            attempt=attempt,
        )

    def run(self, inputs: Mapping[str, Any], *, timeout: float = 120, **call: Any) -> TaskRun:
        """Runs one call of a task to its end: the start, or (with ``step_id``,
        ``step_inputs`` and ``state``) a step's continuation."""
        request = self.request(inputs, **call)
        return self.stream(request, timeout=timeout)

    def submit(self, previous: TaskRun, step_inputs: Mapping[str, Any], **call: Any) -> TaskRun:
        """Submits the step ``previous`` ended with, as the gateway would."""
        assert previous.step is not None, f"the call ended {previous.status}, not with a step"
        request = previous.request
        return self.run(
            dict(request.inputs),
            task_id=request.task_id,
            step_id=previous.step.step_id,
            step_inputs=step_inputs,
            state=previous.step.state,
            **call,
        )

    def stream(
        self, request: Any, *, timeout: float = 120, cancel_after: int | None = None
    ) -> TaskRun:
        """Runs ``request``; with ``cancel_after``, cancels after that many events."""
        run = TaskRun(status="CANCELLED", request=request)
        current: Output | None = None
        events = self._invoke(request, timeout=timeout)
        for seen, event in enumerate(events, start=1):
            kind = event.WhichOneof("event")
            if kind == "log":
                run.log.append(event.log.text)
            elif kind == "progress":
                run.progress.append((event.progress.value, event.progress.target))
            elif kind == "output_begin":
                begin = event.output_begin
                current = Output(begin.name, begin.data_type, begin.content_type)
            elif kind == "output_chunk":
                assert current is not None, "a chunk outside an output"
                assert len(event.output_chunk.data) <= _proto.MAX_CHUNK
                current.data += event.output_chunk.data
                current.chunks += 1
            elif kind == "output_end":
                assert current is not None, "an output end without a begin"
                run.outputs[current.name] = current
                current = None
            elif kind == "checkpoint":
                run.checkpoints.append(json.loads(event.checkpoint.state))
            elif kind == "result":
                run.status = "SUCCESS"
            elif kind == "error":
                run.status, run.error = "FAILURE", event.error.message
            elif kind == "step_required":
                step = event.step_required
                run.status = "STEP"
                run.step = Step(step.step_id, list(step.inputs), step.state)
            if cancel_after is not None and seen >= cancel_after:
                events.cancel()
                break
        return run


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

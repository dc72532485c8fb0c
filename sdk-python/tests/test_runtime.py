"""The SDK's runtime over real gRPC: tasks, steps, outputs, cancellation, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral_plugin import Cancelled, Context, Plugin, TaskError, _proto, fields
from corral_plugin._runtime import install_task_logging
from corral_plugin.context import CURRENT, EventChannel
from corral_plugin.testing import PluginHarness

Harness = Callable[..., PluginHarness]


def greeter() -> Plugin:
    plugin = Plugin(
        "greeter",
        "v1.2.0",
        title="Greeter",
        inputs=[
            fields.text("name", "Name", required=True),
            fields.integer("times", default=1),
            fields.boolean("shout"),
            fields.secret("token", "API token"),
        ],
    )

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        if inputs["name"] == "fail":
            raise TaskError(f"the backend refused token {inputs['token']}")
        greeting = f"Hello {inputs['name']}" * inputs["times"]
        ctx.log(f"greeting with token {inputs['token']}")
        logging.getLogger("greeter.backend").info("through logging, token %s", inputs["token"])
        ctx.progress(1, 1)
        ctx.output(
            "greeting.txt",
            greeting.upper() if inputs["shout"] else greeting,
            data_type="text/plain",
            content_type="text/plain",
        )

    return plugin


def test_a_task_gets_typed_inputs_and_its_log_output_and_progress_arrive(harness: Harness) -> None:
    h = harness(greeter())
    run = h.run({"name": "Ada", "times": "2", "shout": "true", "token": "s3cr3t-value"})
    assert run.status == "SUCCESS", run.error
    assert run.outputs["greeting.txt"].text == "HELLO ADAHELLO ADA"
    assert run.progress == [(1, 1)]
    # A secret input never reaches the task's log, also not through logging.
    assert run.log == [
        "greeting with token ********",
        "INFO greeter.backend: through logging, token ********",
    ]
    failed = h.run({"name": "fail", "token": "s3cr3t-value"})
    assert failed.error == "the backend refused token ********"


def test_the_metadata_declares_the_form_with_its_kinds(harness: Harness) -> None:
    metadata = harness(greeter()).metadata()
    assert (metadata.name, metadata.version, metadata.title) == ("greeter", "v1.2.0", "Greeter")
    kinds = [
        (
            f.field,
            _proto.POOL.FindEnumTypeByName("corral.plugin.v1.FieldKind")
            .values_by_number[f.kind]
            .name,
        )
        for f in metadata.inputs
    ]
    assert kinds == [
        ("name", "FIELD_KIND_TEXT"),
        ("times", "FIELD_KIND_INTEGER"),
        ("shout", "FIELD_KIND_BOOLEAN"),
        ("token", "FIELD_KIND_SECRET"),
    ]
    assert metadata.inputs[1].default == "1"


def stepper() -> Plugin:
    plugin = Plugin("stepper", "v1.0.0", inputs=[fields.integer("rounds", required=True)])
    choose = [fields.choice("pick", "Pick", {"a": "A", "b": "B"}, required=True)]

    @plugin.task
    def start(ctx: Context, inputs: dict[str, Any]) -> Any:
        return ctx.step("pick", state={"picked": []}, defaults={"pick": "b"})

    @plugin.step("pick", inputs=choose)
    async def pick(ctx: Context, inputs: dict[str, Any], state: dict[str, Any]) -> Any:
        picked = [*state["picked"], inputs["pick"]]
        if len(picked) < int(ctx.inputs["rounds"]):
            return ctx.step("pick", state={"picked": picked})
        ctx.output("picked.json", ",".join(picked), data_type="txt", content_type="text/plain")
        return None

    @plugin.step("huge")
    def huge(ctx: Context, inputs: dict[str, Any], state: Any) -> Any:
        return ctx.step("huge", state="x" * (1024 * 1024 + 1))

    return plugin


def test_a_step_loops_with_its_state_until_the_task_finishes(harness: Harness) -> None:
    h = harness(stepper())
    first = h.run({"rounds": 2})
    assert first.status == "STEP" and first.step is not None
    assert first.step.step_id == "pick" and first.step.keys == ["pick"]
    assert first.step.fields[0].default == "b"
    second = h.submit(first, {"pick": "a"})
    assert second.status == "STEP" and second.step is not None
    assert second.step.state == '{"picked":["a"]}'
    third = h.submit(second, {"pick": "b"})
    assert third.status == "SUCCESS", third.error
    assert third.outputs["picked.json"].text == "a,b"


def test_an_unknown_step_and_an_oversized_state_fail_with_their_reason(harness: Harness) -> None:
    h = harness(stepper())
    unknown = h.run({"rounds": 1}, step_id="nope", state="{}")
    assert (unknown.status, unknown.error) == ("FAILURE", "this plugin has no step 'nope'")
    huge = h.run({"rounds": 1}, step_id="huge", state="{}")
    assert huge.status == "FAILURE"
    assert huge.error == "the task's state is larger than 1048576 bytes"


def test_errors_end_the_task_with_a_reason(harness: Harness) -> None:
    plugin = Plugin("failing", "v1.0.0", inputs=[fields.text("how")])

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> Any:
        if inputs["how"] == "task-error":
            raise TaskError("the input is not usable")
        if inputs["how"] == "returns":
            return 42
        raise ZeroDivisionError("division by zero")

    h = harness(plugin)
    assert h.run({"how": "task-error"}).error == "the input is not usable"
    assert h.run({"how": "crash"}).error == "ZeroDivisionError: division by zero"
    assert h.run({"how": "returns"}).error == "the task returned int; return None or ctx.step(...)"


def test_big_outputs_stream_in_chunks_from_bytes_a_file_and_a_writer(
    harness: Harness, tmp_path: Path
) -> None:
    blob = bytes(range(256)) * (4 * 4096 + 17)  # a little over 4 MiB
    source = tmp_path / "blob.bin"
    source.write_bytes(blob)
    plugin = Plugin("big", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        ctx.output("bytes.bin", blob, data_type="x", content_type="application/octet-stream")
        ctx.output("file.bin", source, data_type="x", content_type="application/octet-stream")
        with ctx.open_output("writer.bin", data_type="x", content_type="x/y") as out:
            for start in range(0, len(blob), 10_000):
                out.write(blob[start : start + 10_000])

    run = harness(plugin).run({})
    assert run.status == "SUCCESS", run.error
    for name in ("bytes.bin", "file.bin", "writer.bin"):
        assert run.outputs[name].data == blob
        assert run.outputs[name].chunks == 5  # 1 MiB each, the last one shorter


def test_a_cancelled_call_cancels_its_task(harness: Harness) -> None:
    cancelled = threading.Event()
    plugin = Plugin("looping", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        ctx.log("started")
        try:
            while not ctx.cancelled:
                ctx.progress(1)  # raises Cancelled once the call is cancelled
        except Cancelled:
            cancelled.set()
            raise
        cancelled.set()

    h = harness(plugin)
    result = h.stream(h.request({}), cancel_after=1)
    assert result.status == "CANCELLED"
    assert cancelled.wait(5), "the task did not see the cancellation"


def test_an_async_task_is_cancelled_with_its_call(harness: Harness) -> None:
    finished = threading.Event()
    plugin = Plugin("async-looping", "v1.0.0")

    @plugin.task
    async def task(ctx: Context, inputs: dict[str, Any]) -> None:
        ctx.log("started")
        try:
            await asyncio.sleep(60)
        finally:
            finished.set()

    h = harness(plugin)
    assert h.stream(h.request({}), cancel_after=1).status == "CANCELLED"
    assert finished.wait(5), "the coroutine was not cancelled"


def test_health_and_metadata_answer_while_every_task_thread_is_busy(harness: Harness) -> None:
    release = threading.Event()
    plugin = Plugin("blocking", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        ctx.log("waiting")
        release.wait(30)

    h = harness(plugin, threads=2)
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(h.run, {}) for _ in range(4)]  # two wait for a thread
        health = h.unary(
            "/grpc.health.v1.Health/Check",
            _proto.HealthCheckRequest(service=""),
            _proto.HealthCheckResponse,
            timeout=2,
        )
        assert health.status == _proto.SERVING
        assert h.metadata().name == "blocking"
        release.set()
        assert [r.result(30).status for r in runs] == ["SUCCESS"] * 4


def test_health_of_an_unknown_service_is_not_found(harness: Harness) -> None:
    h = harness(greeter())
    with pytest.raises(grpc.RpcError) as error:
        h.unary(
            "/grpc.health.v1.Health/Check",
            _proto.HealthCheckRequest(service="nope"),
            _proto.HealthCheckResponse,
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services_and_describes_the_plugin_service(harness: Harness) -> None:
    h = harness(greeter())
    request_class = _proto.message("grpc.reflection.v1alpha.ServerReflectionRequest")
    response_class = _proto.message("grpc.reflection.v1alpha.ServerReflectionResponse")
    call = h.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    requests = [
        request_class(list_services=""),
        request_class(file_containing_symbol="corral.plugin.v1.Plugin"),
        request_class(file_containing_symbol="no.such.Symbol"),
    ]
    listed, described, missing = list(call(iter(requests), timeout=5))
    assert [s.name for s in listed.list_services_response.service] == [
        "corral.plugin.v1.Plugin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert len(described.file_descriptor_response.file_descriptor_proto) == 1
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_data_urls_are_read_and_local_files_need_the_manifests_permission(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = Plugin("reader", "v1.0.0", inputs=[fields.data("data", "Data", "*", ["*"])])

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        ctx.log(ctx.read_data(inputs["data"], max_bytes=16).decode())

    h = harness(plugin)
    assert h.run({"data": "data:text/plain,hello"}).log == ["hello"]
    assert h.run({"data": "data:text/plain," + "x" * 17}).error == (
        "the data at data:text/plain,xxxxxxxxxxxxxxxxx is larger than 16 bytes"
    )
    local = tmp_path / "local.txt"
    local.write_text("from disk")
    url = f"file://localhost{local}"
    monkeypatch.delenv("CORRAL_ALLOW_FILE_URLS", raising=False)
    assert h.run({"data": url}).error == "file:// data URLs are not allowed for this plugin"
    monkeypatch.setenv("CORRAL_ALLOW_FILE_URLS", "1")
    assert h.run({"data": url}).log == ["from disk"]


def test_a_step_pattern_handles_numbered_steps(harness: Harness) -> None:
    plugin = Plugin("numbered", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> Any:
        return ctx.step("round-1", state=1, form=[fields.boolean("more")])

    @plugin.step("round-*", inputs=[fields.boolean("more")])
    def round_(ctx: Context, inputs: dict[str, Any], state: int) -> Any:
        ctx.log(f"{ctx.step_id} with state {state}")
        if inputs["more"]:
            return ctx.step(f"round-{state + 1}", state=state + 1)
        return None

    h = harness(plugin)
    first = h.run({})
    second = h.submit(first, {"more": True})
    assert second.step is not None and second.step.step_id == "round-2"
    assert second.step.keys == ["more"]
    last = h.submit(second, {"more": False})
    assert (last.status, last.log) == ("SUCCESS", ["round-2 with state 2"])


def test_logging_on_the_loop_goes_on_while_a_task_thread_waits_for_room() -> None:
    install_task_logging()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    channel = EventChannel(loop)
    ctx = Context(_proto.InvokeRequest(task_id="t"), channel, [])

    def task() -> None:
        CURRENT.set(ctx)
        with contextlib.suppress(Cancelled):
            for line in range(200):  # more than the stream's backlog
                logging.getLogger("chatty").info("line %d", line)

    worker = threading.Thread(target=task, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while channel._queue.qsize() < 64:  # nobody reads: the task fills its backlog
        assert time.monotonic() < deadline, "the task never filled its backlog"
        time.sleep(0.01)
    assert worker.is_alive(), "the task should wait for room"
    # Logging on the loop must not wait for the task thread's handler call.
    logged = asyncio.run_coroutine_threadsafe(_log_on_loop(), loop)
    assert logged.result(timeout=5)
    channel.cancelled.set()
    worker.join(5)
    loop.call_soon_threadsafe(loop.stop)


async def _log_on_loop() -> bool:
    logging.getLogger("corral_plugin.test").warning("from the loop")
    return True


def test_a_task_that_raises_cancelled_itself_fails_and_close_is_idempotent(
    harness: Harness,
) -> None:
    plugin = Plugin("self-cancelling", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        raise Cancelled()

    h = harness(plugin)
    assert (h.run({}).status, h.run({}).error) == ("FAILURE", "the task was cancelled")
    h.close()
    h.close()

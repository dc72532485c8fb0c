"""Serving a plugin: corral.plugin.v1.Plugin, health and reflection on one
``grpc.aio`` server; registration; SIGTERM.

Every RPC is a coroutine on one event loop. Sync task bodies run in a thread
pool, so a pool full of long tasks never delays a health check, a metadata call
or a step's new call (grpc's sync server pins a pool thread per open stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from . import _proto
from .context import (
    CURRENT,
    Context,
    EventChannel,
    StepRequest,
    encode_state,
    mask,
    secret_values,
)
from .errors import Cancelled, TaskError
from .forms import Form, InvalidInputs, secret_keys
from .plugin import Plugin

PLUGIN_SERVICE = "corral.plugin.v1.Plugin"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
STOP_GRACE = 3.0
"""Seconds open calls get to end after SIGTERM (within the supervisor's grace)."""

log = logging.getLogger("corral_plugin")


class Runtime:
    """A plugin's services, on the loop that runs them."""

    def __init__(self, plugin: Plugin, *, threads: int | None = None) -> None:
        if plugin.task_handler is None:
            raise ValueError(f"plugin {plugin.name} declares no task (@plugin.task)")
        self.plugin = plugin
        self.metadata = plugin.metadata()
        self.secrets = secret_keys(plugin.form)
        count = threads or int(os.environ.get("CORRAL_PLUGIN_THREADS", "16"))
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="task")
        self.channels: set[EventChannel] = set()
        self.serving = True

    # -- corral.plugin.v1.Plugin ----------------------------------------------

    async def get_metadata(self, request: Any, context: Any) -> Any:
        return self.metadata

    async def invoke(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id must not be empty")
        if not self.serving:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the plugin is stopping")
        loop = asyncio.get_running_loop()
        channel = EventChannel(loop)
        self.channels.add(channel)
        call = asyncio.ensure_future(self._call(request, channel))
        try:
            while True:
                event = await channel.get()
                yield event
                if event.WhichOneof("event") in ("result", "error", "step_required"):
                    return
        finally:
            self.channels.discard(channel)
            channel.cancelled.set()
            if not call.done():
                call.cancel()

    async def _call(self, request: Any, channel: EventChannel) -> None:
        """Runs the task or step handler and sends its terminal event. Secret
        inputs are masked in the log and in the failure's reason."""
        secrets: list[str] = []
        try:
            step = self.plugin.find_step(request.step_id) if request.step_id else None
            secrets = secret_values(
                request, self.secrets, secret_keys(step.form) if step else frozenset()
            )
            terminal = await self._run_handler(request, channel, secrets)
        except asyncio.CancelledError:
            return
        except Cancelled:
            if channel.cancelled.is_set():
                return
            # Raised by the task itself, not by a cancelled call.
            terminal = _proto.InvokeEvent(error=_proto.TaskError(message="the task was cancelled"))
        except (TaskError, InvalidInputs) as error:
            terminal = _proto.InvokeEvent(error=_proto.TaskError(message=str(error)))
        except Exception as error:
            # The trace goes to the plugin's log, the reason to the task's.
            print(mask(traceback.format_exc(), secrets), file=sys.stderr, end="", flush=True)
            message = f"{type(error).__name__}: {error}"
            terminal = _proto.InvokeEvent(error=_proto.TaskError(message=message))
        if terminal.HasField("error"):
            terminal.error.message = mask(terminal.error.message, secrets)
        if not channel.cancelled.is_set():
            await channel.put(terminal)

    async def _run_handler(self, request: Any, channel: EventChannel, secrets: list[str]) -> Any:
        plugin = self.plugin
        ctx = Context(request, channel, secrets)
        step_form: Form | None = None
        if request.step_id:
            step = plugin.find_step(request.step_id)
            if step is None:
                raise TaskError(f"this plugin has no step {request.step_id!r}")
            handler: Callable[..., Any] = step.handler
            step_form = step.form
        else:
            assert plugin.task_handler is not None
            handler = plugin.task_handler

        def arguments() -> tuple[Any, ...]:
            inputs = plugin.form.load(ctx.inputs)
            if step_form is None:
                return (ctx, inputs)
            return (ctx, step_form.load(dict(request.step_inputs)), ctx.state)

        if inspect.iscoroutinefunction(handler):
            token = CURRENT.set(ctx)
            try:
                outcome = await handler(*arguments())
            finally:
                CURRENT.reset(token)
        else:

            def in_thread() -> Any:
                CURRENT.set(ctx)
                return handler(*arguments())

            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(
                self.executor, contextvars.copy_context().run, in_thread
            )
        return self._terminal(outcome)

    def _terminal(self, outcome: Any) -> Any:
        if outcome is None:
            return _proto.InvokeEvent(result=_proto.TaskResult())
        if isinstance(outcome, StepRequest):
            form = outcome.form
            if form is None:
                step = self.plugin.find_step(outcome.step_id)
                if step is None:
                    raise TaskError(f"step {outcome.step_id!r} has no handler (@plugin.step)")
                form = step.form
            fields = []
            for field in form.fields():
                message = field.to_proto()
                if field.key in outcome.defaults and not field.secret:
                    message.default = outcome.defaults[field.key]
                fields.append(message)
            return _proto.InvokeEvent(
                step_required=_proto.StepRequired(
                    step_id=outcome.step_id, inputs=fields, state=encode_state(outcome.state)
                )
            )
        raise TaskError(f"the task returned {type(outcome).__name__}; return None or ctx.step(...)")

    async def render(self, request: Any, context: Any) -> Any:
        handler = self.plugin.render_handler
        if handler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this plugin renders no page")
        assert handler is not None
        values = dict(request.inputs)
        try:
            if inspect.iscoroutinefunction(handler):
                html = await handler(values)
            else:
                loop = asyncio.get_running_loop()
                html = await loop.run_in_executor(self.executor, handler, values)
        except (TaskError, InvalidInputs, ValueError) as error:
            secrets = [v for k, v in values.items() if k in self.secrets and v]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, mask(str(error), secrets))
        return _proto.RenderResponse(html=html)

    # -- grpc.health.v1.Health ------------------------------------------------

    def _status(self, service: str) -> int | None:
        if service not in ("", PLUGIN_SERVICE):
            return None
        return _proto.SERVING if self.serving else _proto.NOT_SERVING

    async def health_check(self, request: Any, context: Any) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _proto.HealthCheckResponse(status=status)

    async def health_watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        while True:
            yield _proto.HealthCheckResponse(status=self._status(request.service))
            await asyncio.sleep(3600)

    # -- serving ---------------------------------------------------------------

    def handlers(self) -> list[Any]:
        from ._reflection import reflection_handlers

        def unary(fn: Any, request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        def stream(fn: Any, request: Any, response: Any) -> Any:
            return grpc.unary_stream_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        plugin = grpc.method_handlers_generic_handler(
            PLUGIN_SERVICE,
            {
                "GetMetadata": unary(
                    self.get_metadata, _proto.GetMetadataRequest, _proto.PluginMetadata
                ),
                "Invoke": stream(self.invoke, _proto.InvokeRequest, _proto.InvokeEvent),
                "Render": unary(self.render, _proto.RenderRequest, _proto.RenderResponse),
            },
        )
        health = grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": unary(
                    self.health_check, _proto.HealthCheckRequest, _proto.HealthCheckResponse
                ),
                "Watch": stream(
                    self.health_watch, _proto.HealthCheckRequest, _proto.HealthCheckResponse
                ),
            },
        )
        services = (PLUGIN_SERVICE, HEALTH_SERVICE, *REFLECTION_SERVICES)
        return [plugin, health, *reflection_handlers(services)]

    async def start(self, listen: str) -> tuple[Any, int]:
        """Starts the server on ``listen``; returns it and its port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ]
        )
        server.add_generic_rpc_handlers(self.handlers())
        port = server.add_insecure_port(listen)
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        await server.start()
        return server, port

    async def stop(self, server: Any, grace: float) -> None:
        """Stops serving: every task's call is cancelled, open calls get
        ``grace`` seconds, the thread pool takes no more work."""
        self.serving = False
        for channel in list(self.channels):
            channel.cancelled.set()
        await server.stop(grace)
        self.executor.shutdown(wait=False, cancel_futures=True)


class _TaskLogHandler(logging.Handler):
    """Lines logged (stdlib ``logging``) inside a task also reach its log."""

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: ``ctx.log`` is thread-safe and may wait
        # for room in its stream, and a lock held meanwhile would stop every
        # other thread's logging (the event loop's included).
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        ctx = CURRENT.get()
        if ctx is None:
            return
        with contextlib.suppress(Cancelled):
            ctx.log(self.format(record))


def install_task_logging() -> None:
    """Adds the bridge from stdlib logging to the task log (once)."""
    root = logging.getLogger()
    if not any(isinstance(handler, _TaskLogHandler) for handler in root.handlers):
        handler = _TaskLogHandler(logging.INFO)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)


async def _register(runtime: Runtime, registry: str, address: str) -> None:
    target = registry.removeprefix("http://")
    async with grpc.aio.insecure_channel(target) as channel:
        register = channel.unary_unary(
            "/corral.supervisor.v1.Registry/Register",
            request_serializer=_proto.RegisterRequest.SerializeToString,
            response_deserializer=_proto.RegisterResponse.FromString,
        )
        await register(
            _proto.RegisterRequest(
                token=os.environ.get("CORRAL_PLUGIN_TOKEN", ""),
                protocol_version=_proto.PROTOCOL_VERSION,
                address=address,
                metadata=runtime.metadata,
            ),
            timeout=10,
        )


async def serve(plugin: Plugin) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Before anything can take long: a stop during start-up is not lost.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    install_task_logging()
    runtime = Runtime(plugin)
    listen = os.environ.get("CORRAL_PLUGIN_LISTEN", "127.0.0.1:0")
    server, port = await runtime.start(listen)
    address = f"{os.environ.get('CORRAL_PLUGIN_HOST', '127.0.0.1')}:{port}"
    print(f"{plugin.identifier} serving gRPC on {address}", flush=True)
    registry = os.environ.get("CORRAL_REGISTRY")
    if registry:
        try:
            await _register(runtime, registry, address)
        except grpc.aio.AioRpcError as error:
            print(
                f"{plugin.identifier}: registration refused: "
                f"{error.code().name}: {error.details()}",
                file=sys.stderr,
                flush=True,
            )
            await server.stop(0)
            return 2
    await stop.wait()
    print(f"{plugin.identifier} shutting down", flush=True)
    await runtime.stop(server, STOP_GRACE)
    return 0


def main(plugin: Plugin) -> None:
    code = asyncio.run(serve(plugin))
    sys.stdout.flush()
    sys.stderr.flush()
    # Task threads that ignore cancellation must not keep the process alive
    # past the supervisor's grace period.
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)

"""What a running task sees: its inputs and state, and the ways it reports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from . import _data, _proto
from .errors import Cancelled, TaskError
from .forms import Form

CURRENT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "corral_task", default=None
)
"""The task running in this thread or coroutine (for the logging bridge)."""

_BACKLOG = 64
"""Events a task may be ahead of its stream before a sync task waits."""
_MASK = "********"


class EventChannel:
    """The events of one call, from the task to the gRPC stream. A task in a
    thread hands events over without waiting while fewer than :data:`_BACKLOG`
    are on their way, and waits for room beyond; a coroutine on the loop never
    waits (it yields to the stream whenever it awaits)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._space = asyncio.Event()
        self.cancelled = threading.Event()
        # Events handed over by threads and not yet in the queue.
        self._in_flight = 0
        self._lock = threading.Lock()

    async def get(self) -> Any:
        event = await self._queue.get()
        self._space.set()
        return event

    async def put(self, event: Any) -> None:
        while self._queue.qsize() >= _BACKLOG:
            self._space.clear()
            await self._space.wait()
        self._queue.put_nowait(event)

    def _arrive(self, event: Any) -> None:
        with self._lock:
            self._in_flight -= 1
        self._queue.put_nowait(event)

    def send(self, event: Any) -> None:
        """Sends from the task: waits for room in a thread, never on the loop."""
        if self.cancelled.is_set():
            raise Cancelled()
        if _on_loop(self.loop):
            self._queue.put_nowait(event)
            return
        with self._lock:
            room = self._in_flight + self._queue.qsize() < _BACKLOG
            if room:
                self._in_flight += 1
        if room:
            # Callbacks run in order, so events keep theirs.
            self.loop.call_soon_threadsafe(self._arrive, event)
            return
        future = asyncio.run_coroutine_threadsafe(self.put(event), self.loop)
        while True:
            try:
                future.result(timeout=0.2)
                return
            except concurrent.futures.TimeoutError:
                if self.cancelled.is_set():
                    future.cancel()
                    raise Cancelled() from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@dataclass(frozen=True)
class StepRequest:
    """Returned by a task or step handler: the task waits for a person to fill
    in the form of step ``step_id``; its handler then continues with ``state``."""

    step_id: str
    state: Any
    form: Form | None
    defaults: Mapping[str, str]


class Context:
    """The running task. Its methods may be called from the task's thread or
    coroutine; once the call is cancelled they raise :class:`Cancelled`."""

    def __init__(
        self,
        request: Any,
        channel: EventChannel,
        secrets: list[str],
    ) -> None:
        self.task_id: str = request.task_id
        """The gateway's id of the task."""
        self.inputs: Mapping[str, str] = dict(request.inputs)
        """The task's form values as the gateway validated them (strings)."""
        self.step_id: str = request.step_id
        """The step whose form was submitted ("" in the task's first call)."""
        self.attempt: int = request.attempt or 1
        """1, or more when this call runs again after the plugin crashed."""
        self.state: Any = json.loads(request.state) if request.state else None
        """The state handed over with the last step or checkpoint (``None``: none)."""
        self._channel = channel
        self._secrets = secrets

    # -- cancellation ---------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """Whether the call was cancelled: a long loop should stop when it is."""
        return self._channel.cancelled.is_set()

    def check_cancelled(self) -> None:
        """Raises :class:`Cancelled` if the call was cancelled."""
        if self.cancelled:
            raise Cancelled()

    # -- reporting -------------------------------------------------------------

    def log(self, text: str) -> None:
        """Appends a line to the task's log (secret inputs are masked)."""
        text = mask(text, self._secrets)
        self._channel.send(_proto.InvokeEvent(log=_proto.LogLine(text=text)))

    def progress(self, value: int, target: int = 0, *, start: int = 0, unit: str = "") -> None:
        """Reports progress: ``value`` of ``target`` (``unit`` e.g. ``"%"``)."""
        self._channel.send(
            _proto.InvokeEvent(
                progress=_proto.Progress(value=value, start=start, target=target, unit=unit)
            )
        )

    def checkpoint(self, state: Any) -> None:
        """A state to continue from should this call run again after a crash
        (plugins whose manifest says ``retry_safe``). JSON, at most 1 MiB."""
        self._channel.send(
            _proto.InvokeEvent(checkpoint=_proto.Checkpoint(state=encode_state(state)))
        )

    def step(
        self,
        step_id: str,
        *,
        state: Any = None,
        form: Any = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> StepRequest:
        """Return this to wait for step ``step_id``. Its form is the one the
        step's handler declared, unless ``form`` gives one (fields or a schema);
        ``defaults`` prefill it. ``state`` (JSON) comes back to the handler."""
        from .forms import as_form

        return StepRequest(
            step_id,
            state,
            None if form is None else as_form(form),
            {key: _text(value) for key, value in (defaults or {}).items()},
        )

    # -- outputs ---------------------------------------------------------------

    def output(
        self,
        name: str,
        data: bytes | str | os.PathLike[str] | IO[bytes],
        *,
        data_type: str,
        content_type: str,
    ) -> None:
        """Writes the output file ``name`` from bytes, text (UTF-8), a path, or a
        binary file object, streamed in chunks."""
        with self.open_output(name, data_type=data_type, content_type=content_type) as writer:
            if isinstance(data, str):
                writer.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                writer.write(bytes(data))
            elif isinstance(data, os.PathLike):
                with open(data, "rb") as file:
                    _copy(file, writer)
            else:
                _copy(data, writer)

    @contextmanager
    def open_output(
        self, name: str, *, data_type: str, content_type: str
    ) -> Iterator[OutputWriter]:
        """A writer for the output file ``name``; it ends when the block ends."""
        self._channel.send(
            _proto.InvokeEvent(
                output_begin=_proto.OutputBegin(
                    name=name, data_type=data_type, content_type=content_type
                )
            )
        )
        writer = OutputWriter(self._channel)
        yield writer
        writer.flush()
        self._channel.send(_proto.InvokeEvent(output_end=_proto.OutputEnd()))

    # -- inputs ----------------------------------------------------------------

    def read_data(self, url: str, *, max_bytes: int = _data.MAX_DATA_BYTES) -> bytes:
        """The bytes at a data URL (http(s), ``data:``, ``file://localhost`` where
        allowed); raises :class:`TaskError` with the reason."""
        return _data.read(url, max_bytes=max_bytes).content

    def open_data(self, url: str, *, max_bytes: int = _data.MAX_DATA_BYTES) -> _data.Data:
        """Like :meth:`read_data`, with the content type and file name."""
        return _data.read(url, max_bytes=max_bytes)


class OutputWriter(io.RawIOBase):
    """Writes an output file in chunks of at most 1 MiB."""

    def __init__(self, channel: EventChannel) -> None:
        super().__init__()
        self._channel = channel
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= _proto.MAX_CHUNK:
            self._send(bytes(self._buffer[: _proto.MAX_CHUNK]))
            del self._buffer[: _proto.MAX_CHUNK]
        return len(view)

    def flush(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()

    def _send(self, chunk: bytes) -> None:
        self._channel.send(_proto.InvokeEvent(output_chunk=_proto.OutputChunk(data=chunk)))


def _copy(source: IO[bytes], writer: OutputWriter) -> None:
    while chunk := source.read(_proto.MAX_CHUNK):
        writer.write(chunk)


def secret_values(request: Any, keys: frozenset[str], step_keys: frozenset[str]) -> list[str]:
    """The values of a call's secret inputs (task and step), longest first."""
    values = [v for k, v in request.inputs.items() if k in keys and v]
    values += [v for k, v in request.step_inputs.items() if k in step_keys and v]
    return sorted(values, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``********``."""
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return text


def encode_state(state: Any) -> str:
    """``state`` as JSON, checked against the 1 MiB cap."""
    text = json.dumps(state, separators=(",", ":"))
    if len(text.encode("utf-8")) > _proto.MAX_STATE_BYTES:
        raise TaskError(f"the task's state is larger than {_proto.MAX_STATE_BYTES} bytes")
    return text


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

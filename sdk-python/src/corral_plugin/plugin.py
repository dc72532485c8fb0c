"""A plugin: its metadata, its form, its task, its steps and its page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _proto
from .forms import Form, as_form

F = TypeVar("F", bound=Callable[..., Any])

_TYPES = ("processing", "visualization", "conversion", "dataloader", "interaction")


@dataclass(frozen=True)
class DataInput:
    """Data the plugin consumes, through the form field ``parameter``."""

    data_type: str
    content_types: Sequence[str]
    parameter: str
    required: bool = True


@dataclass(frozen=True)
class DataOutput:
    """Data the plugin produces."""

    data_type: str
    content_types: Sequence[str]
    name: str | None = None
    required: bool = True


@dataclass(frozen=True)
class PluginDependency:
    """Another plugin this one calls, given through the form field ``parameter``."""

    parameter: str
    name: str | None = None
    version: str | None = None
    tags: Sequence[str] = ()
    type: str | None = None
    required: bool = True


@dataclass
class _Step:
    handler: Callable[..., Any]
    form: Form


class Plugin:
    """Declare the plugin, then its task (and steps, and page) with decorators::

        plugin = Plugin("hello-python", "v0.1.0", inputs=[fields.text("name", required=True)])

        @plugin.task
        def run(ctx, inputs):
            ctx.output("hello.txt", f"Hello {inputs['name']}", data_type="txt",
                       content_type="text/plain")

        if __name__ == "__main__":
            plugin.run()

    A task (or step handler) may be ``def`` (run in a thread pool) or
    ``async def`` (run on the event loop). It returns ``None`` (the task
    succeeded) or ``ctx.step(...)`` (the task waits for a person); raising
    :class:`TaskError` fails it with that reason.
    """

    def __init__(
        self,
        name: str,
        version: str,
        *,
        title: str = "",
        description: str = "",
        type: str = "processing",
        tags: Sequence[str] = (),
        inputs: Any = None,
        data_inputs: Sequence[DataInput] | None = None,
        data_outputs: Sequence[DataOutput] = (),
        dependencies: Sequence[PluginDependency] = (),
        links: Sequence[tuple[str, str]] = (),
    ) -> None:
        if type not in _TYPES:
            raise ValueError(f"type must be one of {', '.join(_TYPES)}")
        self.name = name
        self.version = version
        self.title = title or name
        self.description = description
        self.type = type
        self.tags = tuple(tags)
        self.form = as_form(inputs)
        self.data_inputs = data_inputs
        self.data_outputs = tuple(data_outputs)
        self.dependencies = tuple(dependencies)
        self.links = tuple(links)
        self.task_handler: Callable[..., Any] | None = None
        self.steps: dict[str, _Step] = {}
        self.render_handler: Callable[..., Any] | None = None

    @property
    def identifier(self) -> str:
        """The QHAna identifier, e.g. ``hello-world@v0-1-0``."""
        return f"{self.name}@{self.version.replace('.', '-')}"

    def task(self, handler: F) -> F:
        """Declares the task: ``handler(ctx, inputs)``."""
        self.task_handler = handler
        return handler

    def step(self, step_id: str, *, inputs: Any = None) -> Callable[[F], F]:
        """Declares the handler of step ``step_id`` and its form:
        ``handler(ctx, inputs, state)``, called when the step is submitted. A
        ``step_id`` ending in ``*`` handles every step it is a prefix of (e.g.
        ``annotate-class-*`` for numbered steps; ``ctx.step_id`` tells which)."""

        def declare(handler: F) -> F:
            self.steps[step_id] = _Step(handler, as_form(inputs))
            return handler

        return declare

    def find_step(self, step_id: str) -> _Step | None:
        """The handler of ``step_id``: its own, else the longest matching pattern."""
        exact = self.steps.get(step_id)
        if exact is not None:
            return exact
        patterns = [
            (len(pattern), step)
            for pattern, step in self.steps.items()
            if pattern.endswith("*") and step_id.startswith(pattern[:-1])
        ]
        return max(patterns, key=lambda found: found[0])[1] if patterns else None

    def render(self, handler: F) -> F:
        """Declares the page fragment of a visualization: ``handler(values)``
        returns HTML for the page's query values (e.g. ``values["data"]``)."""
        self.render_handler = handler
        return handler

    def metadata(self) -> Any:
        """The ``corral.plugin.v1.PluginMetadata`` this plugin registers with."""
        fields = self.form.fields()
        data_inputs = self.data_inputs
        if data_inputs is None:
            data_inputs = [
                DataInput(f.data_type, f.content_types, f.key, f.required)
                for f in fields
                if f.kind == "DATA"
            ]
        metadata = _proto.PluginMetadata(
            name=self.name,
            version=self.version,
            title=self.title,
            description=self.description,
            type=_proto.plugin_type(self.type.upper()),
            tags=list(self.tags),
            links=[_proto.Link(type=kind, href=href) for kind, href in self.links],
            data_inputs=[
                _proto.DataInput(
                    data_type=d.data_type,
                    content_types=list(d.content_types),
                    required=d.required,
                    parameter=d.parameter,
                )
                for d in data_inputs
            ],
            inputs=[f.to_proto() for f in fields],
        )
        for output in self.data_outputs:
            message = metadata.data_outputs.add(
                data_type=output.data_type,
                content_types=list(output.content_types),
                required=output.required,
            )
            if output.name is not None:
                message.name = output.name
        for dependency in self.dependencies:
            message = metadata.plugin_dependencies.add(
                parameter=dependency.parameter,
                required=dependency.required,
                tags=list(dependency.tags),
            )
            if dependency.name is not None:
                message.name = dependency.name
            if dependency.version is not None:
                message.version = dependency.version
            if dependency.type is not None:
                message.type = _proto.plugin_type(dependency.type.upper())
        return metadata

    def run(self) -> None:
        """Serves the plugin and registers it with the supervisor that started
        it (``CORRAL_REGISTRY``); returns after SIGTERM or SIGINT."""
        from ._runtime import main

        main(self)

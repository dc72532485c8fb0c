"""The fields of a form: what the gateway renders and validates, and what a
task receives once each value is converted to its Python type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _proto

_TRUE = {"true", "on", "1", "yes", "y", "t"}


@dataclass(frozen=True)
class Field:
    """One input of a form. Build it with the functions of this module."""

    key: str
    label: str
    kind: str
    required: bool = False
    default: str | None = None
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    data_type: str = ""
    content_types: tuple[str, ...] = ()
    plugin_name: str | None = None
    plugin_tags: tuple[str, ...] = field(default=())

    @property
    def secret(self) -> bool:
        """Whether the value must never be shown back (a password, a token)."""
        return self.kind == "SECRET"

    def to_proto(self) -> Any:
        """The ``corral.plugin.v1.FormField`` of this field."""
        message = _proto.FormField(
            field=self.key,
            label=self.label,
            help=self.help,
            kind=_proto.field_kind(self.kind),
            required=self.required,
            choices=[_proto.Choice(value=v, label=label) for v, label in self.choices],
            data_type=self.data_type,
            data_content_types=list(self.content_types),
            plugin_tags=list(self.plugin_tags),
        )
        if self.default is not None:
            message.default = self.default
        if self.plugin_name is not None:
            message.plugin_name = self.plugin_name
        return message

    def convert(self, raw: str | None) -> Any:
        """The Python value of ``raw`` as the gateway validated it (``None``
        when the field was left empty)."""
        if raw is None or raw == "":
            return False if self.kind == "BOOLEAN" else None
        if self.kind == "INTEGER":
            return int(raw)
        if self.kind == "NUMBER":
            return float(raw)
        if self.kind == "BOOLEAN":
            return raw.strip().lower() in _TRUE
        return raw


def _field(key: str, label: str, kind: str, required: bool, default: Any, help: str) -> Field:
    text = None
    if default is not None:
        text = ("true" if default else "false") if isinstance(default, bool) else str(default)
    return Field(key, label or key, kind, required, text, help)


def text(
    key: str, label: str = "", *, required: bool = False, default: str | None = None, help: str = ""
) -> Field:
    """A single line of text."""
    return _field(key, label, "TEXT", required, default, help)


def textarea(
    key: str, label: str = "", *, required: bool = False, default: str | None = None, help: str = ""
) -> Field:
    """Several lines of text."""
    return _field(key, label, "TEXTAREA", required, default, help)


def integer(
    key: str, label: str = "", *, required: bool = False, default: int | None = None, help: str = ""
) -> Field:
    """A whole number (the task receives an ``int``)."""
    return _field(key, label, "INTEGER", required, default, help)


def number(
    key: str,
    label: str = "",
    *,
    required: bool = False,
    default: float | None = None,
    help: str = "",
) -> Field:
    """A number (the task receives a ``float``)."""
    return _field(key, label, "NUMBER", required, default, help)


def boolean(key: str, label: str = "", *, default: bool = False, help: str = "") -> Field:
    """A checkbox (the task receives a ``bool``)."""
    return _field(key, label, "BOOLEAN", False, default, help)


def choice(
    key: str,
    label: str,
    choices: Mapping[str, str] | Iterable[str],
    *,
    required: bool = False,
    default: str | None = None,
    help: str = "",
) -> Field:
    """One of ``choices``: a mapping of value to label, or values."""
    pairs = (
        tuple(choices.items())
        if isinstance(choices, Mapping)
        else tuple((value, value) for value in choices)
    )
    base = _field(key, label, "CHOICE", required, default, help)
    return Field(**{**base.__dict__, "choices": pairs})


def file(key: str, label: str = "", *, required: bool = False, help: str = "") -> Field:
    """An uploaded file: the task receives a URL to read with ``ctx.read_data``."""
    return _field(key, label, "FILE", required, None, help)


def data(
    key: str,
    label: str,
    data_type: str,
    content_types: Sequence[str],
    *,
    required: bool = False,
    help: str = "",
) -> Field:
    """The URL of a data item of ``data_type`` (``"*"``, ``"entity/*"`` …) in one
    of ``content_types``."""
    base = _field(key, label, "DATA", required, None, help)
    return Field(**{**base.__dict__, "data_type": data_type, "content_types": tuple(content_types)})


def secret(key: str, label: str = "", *, required: bool = False, help: str = "") -> Field:
    """A password or token: never shown back in a form, a log or an API answer
    (the SDK masks it in the task's log)."""
    return _field(key, label, "SECRET", required, None, help)


def plugin(
    key: str,
    label: str = "",
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    required: bool = False,
    help: str = "",
) -> Field:
    """The URL of another plugin, among those called ``name`` (if given) that
    carry every tag of ``tags`` (``"!tag"``: do not carry it)."""
    base = _field(key, label, "PLUGIN", required, None, help)
    return Field(**{**base.__dict__, "plugin_name": name, "plugin_tags": tuple(tags)})

"""Forms declared as marshmallow schemas, with QHAna's field metadata.

Each schema field becomes a form field: its key is the field's ``data_key``,
``metadata["label"]`` and ``["description"]`` its label and help, and its kind
follows ``metadata["input_type"]`` (``password`` → secret, ``select`` → choice
from ``metadata["options"]``, ``textarea``, ``checkbox``, ``number``) or else the
field's class (``FileUrl`` → data URL, ``PluginUrl`` → plugin reference,
``EnumField`` → choice, ``Boolean``, ``Integer``, ``Float``). Loading runs the
schema itself, so its validators and ``post_load`` hooks run as they always did.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import marshmallow

from .fields import Field
from .forms import InvalidInputs


class SchemaForm:
    """A form from a marshmallow schema (a class or an instance)."""

    def __init__(self, schema: Any) -> None:
        self.schema: marshmallow.Schema = schema() if isinstance(schema, type) else schema
        self._fields = tuple(
            form_field(name, field)
            for name, field in self.schema.fields.items()
            if not field.dump_only
        )

    def fields(self) -> Sequence[Field]:
        return self._fields

    def load(self, raw: Mapping[str, str]) -> Any:
        known = {field.key for field in self._fields}
        values = {key: value for key, value in raw.items() if key in known}
        try:
            return self.schema.load(values, unknown=marshmallow.EXCLUDE)
        except marshmallow.ValidationError as error:
            messages = error.messages if isinstance(error.messages, dict) else {"": error.messages}
            raise InvalidInputs(messages) from error


def form_field(name: str, field: marshmallow.fields.Field[Any]) -> Field:
    """The form field of one schema field."""
    metadata: Mapping[str, Any] = field.metadata
    key = field.data_key or name
    label = str(metadata.get("label") or key)
    help = str(metadata.get("description") or "")
    kind = _kind(field, metadata)
    choices: tuple[tuple[str, str], ...] = ()
    if kind == "CHOICE":
        choices = _choices(field, metadata)
    content_types = metadata.get("data_content_types") or ()
    if isinstance(content_types, str):
        content_types = (content_types,)
    tags = metadata.get("plugin_tags") or ()
    if isinstance(tags, str):
        tags = (tags,)
    return Field(
        key=key,
        label=label,
        kind=kind,
        required=bool(field.required),
        default=None if kind == "SECRET" else _default(field),
        help=help,
        choices=choices,
        data_type=str(metadata.get("data_input_type") or "*") if kind == "DATA" else "",
        content_types=tuple(content_types) if kind == "DATA" else (),
        plugin_name=metadata.get("plugin_name") if kind == "PLUGIN" else None,
        plugin_tags=tuple(tags) if kind == "PLUGIN" else (),
    )


def _kind(field: marshmallow.fields.Field[Any], metadata: Mapping[str, Any]) -> str:
    input_type = metadata.get("input_type")
    if "plugin_tags" in metadata or "plugin_name" in metadata or _named(field, "PluginUrl"):
        return "PLUGIN"
    if "data_input_type" in metadata or _named(field, "FileUrl"):
        return "DATA"
    if input_type == "password":
        return "SECRET"
    if input_type == "textarea" or (isinstance(field, marshmallow.fields.Raw) and not input_type):
        return "TEXTAREA"
    if input_type == "select" or "options" in metadata:
        return "CHOICE"
    if input_type == "checkbox" or isinstance(field, marshmallow.fields.Boolean):
        return "BOOLEAN"
    if isinstance(field, marshmallow.fields.Integer):
        return "INTEGER"
    if input_type == "number" or isinstance(
        field, (marshmallow.fields.Float, marshmallow.fields.Decimal, marshmallow.fields.Number)
    ):
        return "NUMBER"
    return "TEXT"


def _named(field: marshmallow.fields.Field[Any], name: str) -> bool:
    return any(cls.__name__ == name for cls in type(field).__mro__)


def _choices(
    field: marshmallow.fields.Field[Any], metadata: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    options = metadata.get("options") or {}
    pairs = []
    for value, label in options.items():
        if value in ("", None):
            continue  # "no choice": an optional field left empty
        pairs.append((_text(value), str(label)))
    return tuple(pairs)


def _default(field: marshmallow.fields.Field[Any]) -> str | None:
    default = getattr(field, "load_default", marshmallow.missing)
    if default is marshmallow.missing or default is None or callable(default):
        return None
    return _text(default)


def _text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(item) for item in value)
    return str(value)

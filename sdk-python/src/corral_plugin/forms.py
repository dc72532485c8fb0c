"""A form, however it is declared: a list of fields or a marshmallow schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .fields import Field


class InvalidInputs(Exception):
    """The values did not pass the form's own validation (a schema's validators)."""

    def __init__(self, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        details = "; ".join(f"{key}: {_flatten(message)}" for key, message in self.errors.items())
        super().__init__(f"invalid inputs: {details}")


def _flatten(message: Any) -> str:
    if isinstance(message, (list, tuple)):
        return " ".join(_flatten(item) for item in message)
    if isinstance(message, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in message.items())
    return str(message)


class Form(Protocol):
    """What the SDK needs of a form."""

    def fields(self) -> Sequence[Field]:
        """The fields, in order."""
        ...

    def load(self, raw: Mapping[str, str]) -> Any:
        """The task's view of validated raw values; raises :class:`InvalidInputs`."""
        ...


class FieldForm:
    """A form of :mod:`corral_plugin.fields`: the task gets a dict by key."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self._fields = tuple(fields)

    def fields(self) -> Sequence[Field]:
        return self._fields

    def load(self, raw: Mapping[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for field in self._fields:
            try:
                values[field.key] = field.convert(raw.get(field.key, field.default))
            except ValueError:
                errors[field.key] = f"Not a valid {field.kind.lower()}."
        if errors:
            raise InvalidInputs(errors)
        return values


def as_form(declared: Any) -> Form:
    """A form from a list of fields, a marshmallow schema (class or instance),
    or anything that already is a :class:`Form`."""
    if declared is None:
        return FieldForm(())
    if isinstance(declared, (list, tuple)):
        return FieldForm(declared)
    if hasattr(declared, "fields") and hasattr(declared, "load") and not _is_schema(declared):
        return declared  # type: ignore[no-any-return]
    from .schema import SchemaForm

    return SchemaForm(declared)


def _is_schema(declared: Any) -> bool:
    try:
        import marshmallow
    except ImportError:
        return False
    if isinstance(declared, type):
        return issubclass(declared, marshmallow.Schema)
    return isinstance(declared, marshmallow.Schema)


def secret_keys(form: Form) -> frozenset[str]:
    """The keys of the form's secret fields."""
    return frozenset(field.key for field in form.fields() if field.secret)

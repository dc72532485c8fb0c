"""What QHAna plugins import from their runner, for Corral.

A port keeps its ``schemas.py`` and its backend; only imports change, from
``qhana_plugin_runner.…`` to this module:

- schemas: :class:`MaBaseSchema`, :class:`FrontendFormBaseSchema` (camelCase
  keys, ordered), and the fields :class:`FileUrl`, :class:`PluginUrl`,
  :class:`EnumField`, :class:`CSVList` with the same constructor arguments;
- task helpers: :func:`open_url`, :func:`retrieve_filename`, :func:`get_mimetype`,
  :func:`load_entities`, :func:`save_entities`, :func:`ensure_dict`,
  :func:`ensure_array`, :func:`entity_attribute_sort_key`, and :data:`STORE`,
  whose ``persist_task_result`` writes an output of the running task.

Needs the ``qhana`` extra (marshmallow 3.13+ or 4).
"""

from __future__ import annotations

import csv
import enum
import io
import json
import mimetypes
import re
from collections import namedtuple
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import PurePosixPath
from typing import IO, Any, NamedTuple, cast
from urllib.parse import urlsplit

import marshmallow
from marshmallow import fields as ma_fields

from . import _data
from .context import CURRENT, Context
from .errors import TaskError

__all__ = [
    "STORE",
    "CSVList",
    "EnumField",
    "FileUrl",
    "FrontendFormBaseSchema",
    "MaBaseSchema",
    "PluginUrl",
    "UrlResponse",
    "camelcase",
    "ensure_array",
    "ensure_dict",
    "entity_attribute_sort_key",
    "get_mimetype",
    "load_entities",
    "open_url",
    "retrieve_filename",
    "save_entities",
]

# -- schemas --------------------------------------------------------------------


def camelcase(name: str) -> str:
    """``n_rows`` → ``nRows`` (the first part kept, the others title-cased)."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


_MARSHMALLOW_4 = (
    int(marshmallow.__version__.split(".")[0]) >= 4 if hasattr(marshmallow, "__version__") else True
)


class MaBaseSchema(marshmallow.Schema):
    """Form keys in camelCase, attributes in snake_case."""

    def on_bind_field(self, field_name: str, field_obj: ma_fields.Field[Any]) -> None:
        field_obj.data_key = camelcase(field_obj.data_key or field_name)


class FrontendFormBaseSchema(MaBaseSchema):
    """The base of QHAna plugin forms: ordered fields, camelCase keys. Takes
    ``validate_errors_as_result`` as QHAna's does, and ``context`` on every
    marshmallow version (marshmallow 4 dropped it; it is then ignored)."""

    class Meta:
        ordered = True

    def __init__(self, *args: Any, validate_errors_as_result: bool = False, **kwargs: Any) -> None:
        if _MARSHMALLOW_4:
            kwargs.pop("context", None)
        super().__init__(*args, **kwargs)
        self.validate_errors_as_result = validate_errors_as_result

    def load(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        if self.validate_errors_as_result:
            return self.validate(data, partial=kwargs.get("partial"))
        return super().load(data, *args, **kwargs)


_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;charset=[\w.-]+)?(;base64)?,", re.IGNORECASE)


class _EmptyIsNone:
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if value == "":
            return None
        return super()._deserialize(value, attr, data, **kwargs)  # type: ignore[misc]


class FileUrl(_EmptyIsNone, ma_fields.String):
    """The URL of a data item: http(s), ftp(s), ``data:`` or ``file://localhost``.
    ``data_input_type`` and ``data_content_types`` say which data fits."""

    def __init__(
        self,
        *,
        relative: bool = False,
        schemes: Any = None,
        require_tld: bool = True,
        data_input_type: str | None = None,
        data_content_types: Sequence[str] | str | None = None,
        required: bool = False,
        allow_none: bool = False,
        **kwargs: Any,
    ) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        if data_input_type:
            metadata["data_input_type"] = data_input_type
        if data_content_types:
            metadata["data_content_types"] = data_content_types
        super().__init__(required=required, allow_none=allow_none, metadata=metadata, **kwargs)
        self.validators.insert(0, _validate_file_url)


def _validate_file_url(value: str | None) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "data":
        if not _DATA_URL.match(value):
            raise marshmallow.ValidationError("Not a valid data URL.")
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise marshmallow.ValidationError("Not a valid file URL.")
    elif scheme not in ("http", "https", "ftp", "ftps") or not parts.netloc:
        raise marshmallow.ValidationError("Not a valid URL.")


class PluginUrl(_EmptyIsNone, ma_fields.Url):
    """The URL of another plugin, among those with ``plugin_tags`` (and
    ``plugin_name``)."""

    def __init__(
        self,
        *,
        relative: bool = False,
        schemes: Any = None,
        require_tld: bool = True,
        plugin_tags: Sequence[str] | str | None = None,
        plugin_name: str | None = None,
        plugin_version: str | None = None,
        required: bool = False,
        allow_none: bool = False,
        **kwargs: Any,
    ) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        if plugin_tags:
            metadata["plugin_tags"] = plugin_tags
        if plugin_name:
            metadata["plugin_name"] = plugin_name
        if plugin_version:
            metadata["plugin_version"] = plugin_version
        super().__init__(
            relative=relative,
            schemes=schemes or {"http", "https", "ftp", "ftps", "data"},
            require_tld=False,
            required=required,
            allow_none=allow_none,
            metadata=metadata,
            **kwargs,
        )


class EnumField(ma_fields.Field):  # type: ignore[type-arg]  # generic only in marshmallow 4
    """A member of ``enum_type``, chosen by name (by value with ``use_value``);
    ``metadata["options"]`` (name → label) is filled from the members."""

    def __init__(self, enum_type: type[enum.Enum], use_value: bool = False, **kwargs: Any) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        given = metadata.get("options") or {}
        options: dict[str, str] = {}
        if "" in given or None in given:
            options[""] = str(given.get("", given.get(None, "")))
        for member in enum_type:
            label = given.get(member, given.get(member.name, member.value))
            options[member.name] = str(label)
        metadata["options"] = options
        super().__init__(metadata=metadata, **kwargs)
        self.enum_type = enum_type
        self.use_value = use_value

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else value.name

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if value == "" or value is None:
            if "" in self.metadata["options"]:
                return None
            raise self.make_error("required")
        try:
            return self.enum_type(value) if self.use_value else self.enum_type[value]
        except (KeyError, ValueError) as error:
            raise marshmallow.ValidationError("Not a valid choice.") from error


class CSVList(ma_fields.Field):  # type: ignore[type-arg]
    """A comma-separated list of ``element_type`` values."""

    def __init__(
        self, element_type: ma_fields.Field[Any] | type[ma_fields.Field[Any]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.element_type = element_type() if isinstance(element_type, type) else element_type

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return ",".join(str(self.element_type._serialize(v, attr, obj)) for v in value)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not value:
            return []
        return [self.element_type.deserialize(v) for v in str(value).split(",")]


# -- reading data ---------------------------------------------------------------


class UrlResponse:
    """What :func:`open_url` returns: the parts of a ``requests.Response`` that
    QHAna tasks use, over bytes already read (with the SDK's size cap)."""

    def __init__(self, data: _data.Data) -> None:
        self.url = data.url
        self.content = data.content
        self.status_code = 200
        self.ok = True
        content_type = data.content_type or mimetypes.guess_type(data.url)[0] or ""
        self.headers: dict[str, str] = {"Content-Type": content_type} if content_type else {}
        self.filename = data.filename
        self.raw = io.BytesIO(self.content)
        self.encoding = "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_lines(self, decode_unicode: bool = False, **_: Any) -> Iterator[Any]:
        for line in self.content.splitlines():
            yield line.decode(self.encoding, errors="replace") if decode_unicode else line

    def iter_content(self, chunk_size: int = 65536, decode_unicode: bool = False) -> Iterator[Any]:
        for start in range(0, len(self.content), chunk_size):
            chunk = self.content[start : start + chunk_size]
            yield chunk.decode(self.encoding, errors="replace") if decode_unicode else chunk

    def raise_for_status(self) -> None:
        return None

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> UrlResponse:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_url(url: str, raise_on_error_status: bool = True, **_: Any) -> UrlResponse:
    """Reads a data URL (http(s), ``data:``, ``file://localhost`` where the
    manifest allows it). A failure, an error status included, raises
    :class:`TaskError` with the reason."""
    return UrlResponse(_data.read(url))


def get_mimetype(response: UrlResponse, default: str | None = None) -> str | None:
    """The response's content type, else a guess from its URL."""
    content_type = response.headers.get("Content-Type")
    if content_type:
        return content_type.split(";")[0].strip()
    return mimetypes.guess_type(response.url)[0] or default


def retrieve_filename(url_or_response: str | UrlResponse) -> str:
    """The data's file name without its last extension."""
    response = open_url(url_or_response) if isinstance(url_or_response, str) else url_or_response
    name = response.filename or PurePosixPath(urlsplit(response.url).path).name
    response.close()
    return PurePosixPath(name).stem


# -- entities -------------------------------------------------------------------


class _EntityTuple:
    """Mixed into entity tuples loaded from CSV: keeps the header's own names."""

    entity_attributes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.entity_attributes, self, strict=False))  # type: ignore[call-overload]


@lru_cache(maxsize=64)
def _entity_tuple(header: tuple[str, ...]) -> type:
    base = namedtuple("Entity", header, rename=True)  # type: ignore[misc]
    return type("Entity", (_EntityTuple, base), {"__slots__": (), "entity_attributes": header})


def load_entities(
    file_: UrlResponse,
    mimetype: str,
    csv_dialect: str = "default",
    tuple_: Callable[[list[str]], Any] | None = None,
    process_csv_header: Callable[[list[str]], list[str]] | None = None,
) -> Generator[Any, None, None]:
    """The entities in a response, lazily: JSON (a list), JSON lines, or CSV
    (tuples named by the header, values as strings)."""
    mimetype = mimetype.split(";")[0].strip()
    if mimetype == "application/json":
        content = file_.json()
        if isinstance(content, list):
            yield from content
        else:
            yield content
    elif mimetype.lower() == "application/x-lines+json":
        for line in file_.iter_lines(decode_unicode=True):
            if line.strip():
                yield json.loads(line)
    elif mimetype == "text/csv":
        reader = csv.reader(file_.iter_lines(decode_unicode=True), _dialect(csv_dialect))
        header: list[str] | None = None
        for row in reader:
            if not row:
                continue
            if header is None:
                header = process_csv_header(row) if process_csv_header else row
                make = tuple_ or cast(Any, _entity_tuple(tuple(header)))._make
                continue
            yield make(row)
    else:
        raise ValueError(f"Loading entities from {mimetype} files is not implemented!")


def _dialect(name: str) -> Any:
    if name == "default":
        return _Default
    return csv.get_dialect(name)


class _Default(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\r\n"
    quoting = csv.QUOTE_ALL


def ensure_dict(items: Iterable[Any]) -> Generator[dict[str, Any], None, None]:
    """Entities as dicts (a dict as it is, an entity tuple by its header names)."""
    for item in items:
        if isinstance(item, dict):
            yield item
        elif isinstance(item, _EntityTuple):
            yield item.as_dict()
        else:
            yield item._asdict()


def save_entities(
    entities: Iterable[Any],
    file_: IO[str],
    mimetype: str,
    attributes: Sequence[str] | None = None,
    csv_dialect: str = "default",
    tuple_: Any = None,
) -> None:
    """Writes entities as JSON (compact), JSON lines or CSV (``attributes`` are
    the columns, in order; every value quoted)."""
    if mimetype == "application/json":
        json.dump(list(ensure_dict(entities)), file_, separators=(",", ":"))
        file_.write("\n")
    elif mimetype.lower() == "application/x-lines+json":
        for entity in ensure_dict(entities):
            file_.write(json.dumps(entity) + "\n")
    elif mimetype == "text/csv":
        if attributes is None:
            raise ValueError("Attributes must be given to write CSV.")
        writer = csv.writer(file_, _dialect(csv_dialect))
        writer.writerow(attributes)
        for entity in entities:
            if isinstance(entity, dict):
                writer.writerow(
                    ["" if entity.get(a) is None else entity.get(a) for a in attributes]
                )
            else:
                writer.writerow(["" if value is None else value for value in entity])
    else:
        raise ValueError(f"Saving entities as {mimetype} is not implemented!")


_FIRST = ("ID", "GRAPH_ID")
_SECOND = ("href", "source", "target", "entities", "relations")


def entity_attribute_sort_key(attribute: str) -> tuple[int, str]:
    """Sorts ``ID`` and ``GRAPH_ID`` first, then links, then the rest."""
    if attribute in _FIRST:
        return (0, attribute)
    if attribute in _SECOND:
        return (1, attribute)
    return (2, attribute)


class ArrayEntity(NamedTuple):
    ID: str
    href: str | None
    values: list[Any]


def ensure_array(items: Iterable[Any], strict: bool = False) -> Generator[ArrayEntity, None, None]:
    """Entities as ``(ID, href, values)``; values sorted by attribute name, text
    numbers converted (empty or unparsable: ``None``, or an error if ``strict``)."""
    for item in items:
        if isinstance(item, dict):
            entity_id = item.pop("ID")
            href = item.pop("href", None)
            values = [item[key] for key in sorted(item)]
        else:
            entity_id = item[0]
            if "href" in getattr(item, "_fields", ()):
                href, values = item[1], list(item[2:])
            else:
                href, values = None, list(item[1:])
        yield ArrayEntity(entity_id, href, [_number(value, strict) for value in values])


def _number(value: Any, strict: bool) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip() if value is not None else ""
    try:
        return int(text) if text.isdecimal() else float(text)
    except ValueError:
        if strict:
            raise
        return None


# -- results --------------------------------------------------------------------


class _Store:
    """QHAna's ``STORE``: results become outputs of the running task."""

    def persist_task_result(
        self,
        task_db_id: Any,
        file_: IO[Any] | str | bytes,
        file_name: str,
        file_type: str,
        mimetype: str,
        commit: bool = True,
        storage_provider: str | None = None,
    ) -> None:
        """Writes ``file_`` as the output ``file_name`` of data type ``file_type``
        (``task_db_id`` may be the task's context, or anything: the running task
        is known)."""
        ctx = task_db_id if isinstance(task_db_id, Context) else CURRENT.get()
        if ctx is None:
            raise TaskError("persist_task_result was called outside a task")
        if hasattr(file_, "read"):
            file_.seek(0)  # type: ignore[union-attr]
            data = file_.read()
        else:
            data = file_
        ctx.output(file_name, data, data_type=file_type, content_type=mimetype)


STORE = _Store()

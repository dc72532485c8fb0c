"""entity-filter v0.2.1: loads and filters entities from a file that contains a
list of entities (rows by ID list and sampling, columns by allowlist or blocklist)."""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import marshmallow as ma
from corral_plugin import Context, DataInput, DataOutput, Plugin, TaskError
from corral_plugin.qhana import (
    CSVList,
    EnumField,
    FileUrl,
    FrontendFormBaseSchema,
    ensure_dict,
    get_mimetype,
    load_entities,
    open_url,
    retrieve_filename,
    save_entities,
)
from marshmallow.validate import Range

Entity = dict[str, Any]

INFINITY = -1
JSON = "application/json"
CSV = "text/csv"


class AttributeFilterType(Enum):
    ALLOWLIST = "Allowlist"
    BLOCKLIST = "Blocklist"


class RowSamplingType(Enum):
    RANDOM = "Randomly"
    FIRST_N = "First n (Number of Rows)"
    ALL_ROWS = "All Rows"


class EntityFilterParametersSchema(FrontendFormBaseSchema):
    input_file_url = FileUrl(
        required=True, allow_none=False, load_only=True, metadata={"label": "Entities URL"}
    )
    attributes = CSVList(
        required=False,
        allow_none=True,
        element_type=ma.fields.String,
        metadata={
            "label": "Attributes",
            "description": "List of attributes in allowlist/blocklist.",
            "input_type": "textarea",
        },
    )
    attribute_filter_strategy = EnumField(
        AttributeFilterType,
        required=True,
        metadata={
            "label": "Attribute Filter Setting",
            "description": "Specify attribute list as allowlist or blocklist.",
            "input_type": "select",
        },
    )
    n_rows = ma.fields.Integer(
        required=False,
        allow_none=True,
        validate=Range(0, min_inclusive=False, error="Number of Rows must be a positive number."),
        metadata={
            "label": "Number of Rows",
            "description": "Integer of number of rows that should be kept.",
            "input_type": "textfield",
        },
    )
    row_sampling = EnumField(
        RowSamplingType,
        required=True,
        metadata={
            "label": "Row Sampling",
            "description": "Specify if rows are chosen randomly or first n in case that Number "
            "of Rows is set and ID list smaller than Number of Rows. If All Rows is chosen, "
            "Number of Rows is ignored.",
            "input_type": "select",
        },
    )
    id_list = CSVList(
        required=False,
        allow_none=True,
        element_type=ma.fields.String,
        metadata={
            "label": "ID List",
            "description": "Comma separated list of ID's that should be kept. If number is "
            "smaller than Number of Rows, remaining rows are chosen according to Row Choice.",
            "input_type": "textarea",
        },
    )


plugin = Plugin(
    "entity-filter",
    "v0.2.1",
    title="Entity loader/filter",
    description="Loads and filters entities from a file that contains a list of entities.",
    tags=["preprocessing", "filter", "sample"],
    inputs=EntityFilterParametersSchema,
    data_inputs=[DataInput("entity/list", [JSON, CSV], "inputFileUrl")],
    data_outputs=[DataOutput("entity/list", [JSON, CSV])],
)


def filter_rows(
    entities: Iterable[Entity], id_set: set[str], n_sampled: int, sampling: RowSamplingType
) -> list[Entity]:
    """The entities whose ID is in ``id_set`` (the first of each), then ``n_sampled``
    of the others: the first ones, or a uniform sample (reservoir sampling)."""
    missing = set(id_set)
    by_id: list[Entity] = []
    sampled: list[Entity] = []
    candidates = 0
    for entity in entities:
        if entity["ID"] in missing:
            by_id.append(entity)
            missing.remove(entity["ID"])
        elif n_sampled > 0:
            if len(sampled) < n_sampled:
                sampled.append(entity)
            elif sampling is RowSamplingType.RANDOM and random.random() < n_sampled / (
                candidates + 1
            ):
                sampled[random.randrange(n_sampled)] = entity
            candidates += 1
    if missing:
        raise TaskError(f"The following ID's could not be found: {missing}")
    return by_id + sampled


def column_filter(strategy: AttributeFilterType, attributes: set[str]) -> Callable[[str], bool]:
    """Whether an attribute is kept: ``ID`` always is, so an empty allowlist keeps
    only ``ID`` and an empty blocklist keeps everything."""
    if strategy is AttributeFilterType.ALLOWLIST:
        allowed = attributes | {"ID"}
        return lambda attribute: attribute in allowed
    blocked = attributes - {"ID"}
    return lambda attribute: attribute not in blocked


@plugin.task
def entity_filter(ctx: Context, params: dict[str, Any]) -> None:
    url: str = params["input_file_url"]
    attributes = set(params.get("attributes") or [])
    strategy: AttributeFilterType = params["attribute_filter_strategy"]
    n_rows: int | None = params.get("n_rows")
    sampling: RowSamplingType = params["row_sampling"]
    id_set = set(params.get("id_list") or [])

    if (n_rows is None and not id_set) or sampling is RowSamplingType.ALL_ROWS:
        n_rows = INFINITY  # only filter columns
    elif n_rows is None:
        n_rows = len(id_set)
    if id_set and len(id_set) > n_rows:  # always with "All Rows", as before
        raise TaskError("Length of ID list greater than number of rows!")
    n_sampled = max(0, n_rows - len(id_set)) if id_set else n_rows

    header: list[str] = []

    def remember_header(row: list[str]) -> list[str]:
        header[:] = row
        return row

    with open_url(url) as response:
        # Fixed: the content type is compared without its parameters, so
        # `text/csv; charset=utf-8` is CSV (the old plugin compared it verbatim
        # and refused such data).
        mimetype = get_mimetype(response) or ""
        # Fixed: every entity is read before the response is closed (the old
        # plugin closed it first when only columns were filtered, and failed).
        try:
            entities = list(
                ensure_dict(load_entities(response, mimetype, process_csv_header=remember_header))
            )
        except ValueError as error:
            raise TaskError(str(error)) from error
        filename = retrieve_filename(response)

    if n_rows != INFINITY:
        entities = filter_rows(entities, id_set, n_sampled, sampling)
        if len(entities) != n_rows:
            raise TaskError(
                "Number of rows requested is greater than number of rows in input file!"
            )

    keep = column_filter(strategy, attributes)
    entities = [{key: value for key, value in e.items() if keep(key)} for e in entities]

    output = io.StringIO()
    # Fixed: CSV is written with the input's columns that were kept (the old
    # plugin passed no columns, so CSV output always failed).
    save_entities(entities, output, mimetype, attributes=[a for a in header if keep(a)])
    info = f"_setting_{strategy.value}_rows_{n_rows}_sampling_{n_sampled}_from_{filename}"
    extension = ".json" if mimetype == JSON else ".csv"
    ctx.output(
        f"filtered_entities{info}{extension}",
        output.getvalue(),
        data_type="entity_filter_output",
        content_type=mimetype,
    )
    ctx.log("Filter successful.")


if __name__ == "__main__":
    plugin.run()

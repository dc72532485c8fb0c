"""QHAna's schemas and task helpers on Corral."""

from __future__ import annotations

import enum
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
from marshmallow import post_load, validate

from corral_plugin import Context, Plugin, _proto
from corral_plugin.qhana import (
    STORE,
    CSVList,
    EnumField,
    FileUrl,
    FrontendFormBaseSchema,
    PluginUrl,
    ensure_array,
    ensure_dict,
    load_entities,
    open_url,
    save_entities,
)
from corral_plugin.testing import PluginHarness


class Shape(enum.Enum):
    blobs = "Blobs"
    moons = "Two moons"


@dataclass
class Parameters:
    data_url: str
    n_rows: int
    noise: float
    shape: Shape
    columns: list[int]
    method: str
    normalize: bool
    notes: str
    ibmq_token: str
    executor: str | None


class ParametersSchema(FrontendFormBaseSchema):
    data_url = FileUrl(
        required=True,
        allow_none=False,
        data_input_type="entity/list",
        data_content_types=["application/json", "text/csv"],
        metadata={"label": "Entities", "description": "The entities.", "input_type": "text"},
    )
    n_rows = ma.fields.Integer(
        required=True,
        validate=validate.Range(min=1, max=1000),
        metadata={"label": "Rows", "input_type": "number"},
    )
    noise = ma.fields.Float(load_default=0.1, metadata={"label": "Noise", "input_type": "number"})
    shape = EnumField(Shape, required=True, metadata={"label": "Shape", "input_type": "select"})
    columns = CSVList(ma.fields.Integer(), metadata={"label": "Columns", "input_type": "text"})
    method = ma.fields.String(
        load_default="fast",
        metadata={
            "label": "Method",
            "input_type": "select",
            "options": {"": "(none)", "fast": "Fast", "exact": "Exact"},
        },
    )
    normalize = ma.fields.Boolean(load_default=False, metadata={"input_type": "checkbox"})
    notes = ma.fields.String(load_default="", metadata={"label": "Notes", "input_type": "textarea"})
    ibmq_token = ma.fields.String(
        required=True, metadata={"label": "IBMQ token", "input_type": "password"}
    )
    executor = PluginUrl(
        required=False,
        plugin_tags=["circuit-executor", "qasm-2"],
        metadata={"label": "Executor"},
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Parameters:
        data.setdefault("executor", None)
        return Parameters(**data)


def kind(number: int) -> str:
    enum_type = _proto.POOL.FindEnumTypeByName("corral.plugin.v1.FieldKind")
    return str(enum_type.values_by_number[number].name).removeprefix("FIELD_KIND_")


def test_every_field_kind_qhana_uses_maps_to_the_form() -> None:
    metadata = Plugin("p", "v1.0.0", inputs=ParametersSchema).metadata()
    form = {f.field: f for f in metadata.inputs}
    assert [(key, kind(f.kind)) for key, f in form.items()] == [
        ("dataUrl", "DATA"),
        ("nRows", "INTEGER"),
        ("noise", "NUMBER"),
        ("shape", "CHOICE"),
        ("columns", "TEXT"),
        ("method", "CHOICE"),
        ("normalize", "BOOLEAN"),
        ("notes", "TEXTAREA"),
        ("ibmqToken", "SECRET"),
        ("executor", "PLUGIN"),
    ]
    assert form["dataUrl"].label == "Entities" and form["dataUrl"].help == "The entities."
    assert form["dataUrl"].data_type == "entity/list"
    assert list(form["dataUrl"].data_content_types) == ["application/json", "text/csv"]
    assert form["nRows"].required and not form["noise"].required
    assert form["noise"].default == "0.1"
    assert [(c.value, c.label) for c in form["shape"].choices] == [
        ("blobs", "Blobs"),
        ("moons", "Two moons"),
    ]
    assert [c.value for c in form["method"].choices] == ["fast", "exact"]
    assert form["normalize"].default == "false"
    assert list(form["executor"].plugin_tags) == ["circuit-executor", "qasm-2"]
    # The data input is declared from the FileUrl field.
    assert [(d.parameter, d.data_type) for d in metadata.data_inputs] == [
        ("dataUrl", "entity/list")
    ]


def test_the_schema_loads_with_its_validators_and_post_load(
    corral_harness: Callable[..., PluginHarness],
) -> None:
    plugin = Plugin("p", "v1.0.0", inputs=ParametersSchema)
    seen: list[Parameters] = []

    @plugin.task
    def task(ctx: Context, parameters: Parameters) -> None:
        seen.append(parameters)

    h = corral_harness(plugin)
    values = {
        "dataUrl": "data:application/json,[]",
        "nRows": "5",
        "shape": "moons",
        "columns": "1,2,3",
        "normalize": "true",
        "ibmqToken": "tok",
        "executor": "http://127.0.0.1:5005/plugins/qiskit-simulator@v1-0-1/",
    }
    assert h.run(values).status == "SUCCESS"
    assert seen == [
        Parameters(
            "data:application/json,[]",
            5,
            0.1,
            Shape.moons,
            [1, 2, 3],
            "fast",
            True,
            "",
            "tok",
            "http://127.0.0.1:5005/plugins/qiskit-simulator@v1-0-1/",
        )
    ]
    refused = h.run({**values, "nRows": "0", "shape": "cubes"})
    assert refused.status == "FAILURE"
    assert refused.error == (
        "invalid inputs: nRows: Must be greater than or equal to 1 and less than or equal to 1000."
        "; "
        "shape: Not a valid choice."
    )


def test_entities_round_trip_through_json_and_csv() -> None:
    csv_text = '"ID","href","x","y"\r\n"a","","1","2.5"\r\n\r\n"b","","3",""\r\n'
    with open_url("data:text/csv," + csv_text.replace("\r\n", "%0D%0A")) as response:
        assert response.headers["Content-Type"] == "text/csv"
        entities = list(load_entities(response, "text/csv"))
    assert [e.ID for e in entities] == ["a", "b"]
    rows = list(ensure_dict(entities))
    assert rows[0] == {"ID": "a", "href": "", "x": "1", "y": "2.5"}
    out = io.StringIO()
    save_entities(rows, out, "text/csv", attributes=["ID", "x", "y"])
    assert out.getvalue() == '"ID","x","y"\r\n"a","1","2.5"\r\n"b","3",""\r\n'
    out = io.StringIO()
    save_entities(rows, out, "application/json")
    assert out.getvalue().startswith('[{"ID":"a","href":"","x":"1","y":"2.5"}')
    arrays = list(ensure_array([{"ID": "a", "href": None, "dim2": "1", "dim1": "0.5"}]))
    assert arrays[0].values == [0.5, 1]


def test_store_persists_a_result_as_an_output_of_the_running_task(
    corral_harness: Callable[..., PluginHarness],
) -> None:
    plugin = Plugin("p", "v1.0.0")

    @plugin.task
    def task(ctx: Context, inputs: dict[str, Any]) -> None:
        with io.StringIO() as file:
            save_entities([{"ID": "1"}], file, "application/json")
            STORE.persist_task_result(123, file, "entities.json", "entity/list", "application/json")

    run = corral_harness(plugin).run({})
    assert run.status == "SUCCESS", run.error
    output = run.outputs["entities.json"]
    assert (output.data_type, output.content_type) == ("entity/list", "application/json")
    assert output.json() == [{"ID": "1"}]

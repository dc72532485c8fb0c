from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

import pytest
from corral_plugin.testing import PluginHarness, TaskRun

from plugin import plugin

Harness = Callable[..., PluginHarness]

ENTITIES = [
    {"ID": "a", "href": "http://e/a", "name": "Ann"},
    {"ID": "b", "href": "http://e/b", "name": "Bob", "age": 3},
    {"ID": "c", "href": "http://e/c", "name": "Cid"},
]
JSON_URL = "data:application/json," + quote(json.dumps(ENTITIES))
CSV_URL = "data:text/csv," + quote('ID,name\r\na,Ann\r\nb,"Bob, Jr."\r\n')


def start(h: PluginHarness, url: str = JSON_URL) -> TaskRun:
    run = h.run({"inputFileUrl": url})
    assert run.status == "STEP", run.error
    return run


def test_metadata_keeps_the_old_plugin_and_form() -> None:
    metadata = plugin.metadata()
    assert (metadata.name, metadata.version, metadata.title) == (
        "manual-classification",
        "v0.2.1",
        "Manual Classification",
    )
    assert metadata.description == "Manually annotate classes for data sets from MUSE database."
    assert list(metadata.tags) == ["preprocessing", "data-annotation", "manual"]
    [field] = metadata.inputs
    assert (field.field, field.label, field.required) == ("inputFileUrl", "Entities URL", True)
    assert field.data_type == "entity"
    assert list(field.data_content_types) == [
        "text/csv",
        "application/json",
        "application/X-lines+json",
    ]
    [data_input] = metadata.data_inputs
    assert (data_input.data_type, data_input.parameter) == ("entity/list", "inputFileUrl")
    assert list(data_input.content_types) == ["application/json", "text/csv"]
    [data_output] = metadata.data_outputs
    assert data_output.data_type == "entity/list"
    assert list(data_output.content_types) == ["application/json", "text/csv"]


def test_three_classes_then_done(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    first = start(h)
    assert first.step is not None and first.step.step_id == "annotate-class-1"
    assert first.step.keys == ["classIdentifier", "a", "b", "c", "done"]
    boxes = {f.field: f for f in first.step.fields}
    assert (boxes["classIdentifier"].label, boxes["classIdentifier"].required) == (
        "Class Name",
        True,
    )
    assert (boxes["b"].label, boxes["b"].help) == ("b", "href: http://e/b, name: Bob, age: 3")
    assert boxes["a"].help == "href: http://e/a, name: Ann"
    assert boxes["done"].label == "Finish after this class"
    assert first.progress == [(50, 100)]
    assert first.log == ["Classification pre-rendering successful."]
    state = json.loads(first.step.state)
    assert state == {
        "step_id": 1,
        "mimetype": "application/json",
        "entity_list": ENTITIES,
        "entity_annotation": {"a": [], "b": [], "c": []},
        "attr_list": ["ID", "href", "name", "age"],
        "input_file_url": JSON_URL,
    }

    second = h.submit(first, {"classIdentifier": "cat", "a": True, "b": True, "c": False})
    assert second.status == "STEP", second.error
    assert second.step is not None and second.step.step_id == "annotate-class-2"
    assert second.progress == [(67, 100)]
    assert second.log == ["Adding new class successful."]
    state = json.loads(second.step.state)
    assert state["step_id"] == 2
    assert state["entity_annotation"] == {"a": ["cat"], "b": ["cat"], "c": []}

    third = h.submit(second, {"classIdentifier": "dog", "b": True, "c": "on", "done": False})
    assert third.step is not None and third.step.step_id == "annotate-class-3"
    assert third.progress == [(75, 100)]
    assert json.loads(third.step.state)["entity_annotation"] == {
        "a": ["cat"],
        "b": ["cat", "dog"],
        "c": ["dog"],
    }

    last = h.submit(third, {"classIdentifier": "cat", "a": True, "c": True, "done": True})
    assert last.status == "SUCCESS", last.error
    assert last.log == ["Adding new class successful.", "Manual classification successful."]
    assert last.progress == [(100, 100)]
    output = last.outputs["classified_entities.json"]
    assert (output.data_type, output.content_type) == (
        "manual_classification_output",
        "application/json",
    )
    assert output.text == (
        '[{"ID":"a","href":"http://e/a","name":"Ann","classification":["cat"]},'
        '{"ID":"b","href":"http://e/b","name":"Bob","age":3,"classification":["cat","dog"]},'
        '{"ID":"c","href":"http://e/c","name":"Cid","classification":["dog","cat"]}]\n'
    )


def test_finish_on_the_first_step(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    run = h.submit(start(h), {"classIdentifier": "x", "b": True, "done": True})
    assert run.status == "SUCCESS", run.error
    assert [e["classification"] for e in run.outputs["classified_entities.json"].json()] == [
        [],
        ["x"],
        [],
    ]


def test_csv_in_csv_out(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    first = start(h, CSV_URL)
    assert first.step is not None and first.step.keys == ["classIdentifier", "a", "b", "done"]
    second = h.submit(first, {"classIdentifier": "big", "a": True, "b": True})
    last = h.submit(second, {"classIdentifier": "small", "b": True, "done": True})
    assert last.status == "SUCCESS", last.error
    output = last.outputs["classified_entities.csv"]
    assert (output.data_type, output.content_type) == ("manual_classification_output", "text/csv")
    assert output.text == (
        '"ID","name","classification"\r\n'
        '"a","Ann","[""big""]"\r\n'
        '"b","Bob, Jr.","[""big"", ""small""]"\r\n'
    )


def test_a_step_needs_a_class_name_and_the_steps_are_numbered(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    first = start(h)
    run = h.submit(first, {"a": True})
    assert (run.status, run.error) == (
        "FAILURE",
        "invalid inputs: classIdentifier: Missing data for required field.",
    )
    state = first.step.state if first.step else ""
    later = h.run(
        {"inputFileUrl": JSON_URL},
        step_id="annotate-class-12",
        state=state,
        step_inputs={"classIdentifier": "q", "c": True},
    )
    assert later.step is not None and later.step.step_id == "annotate-class-2"
    unknown = h.run({"inputFileUrl": JSON_URL}, step_id="classify-1", state=state)
    assert (unknown.status, unknown.error) == ("FAILURE", "this plugin has no step 'classify-1'")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("data:application/json,%5B%5D", "No entities could be loaded!"),
        ("data:application/json," + quote('[{"name": "x"}]'), "Every entity needs an ID."),
        (
            "data:application/json," + quote('[{"ID": "done"}]'),
            "The entity ID 'done' is also the name of a form field.",
        ),
        (
            "data:application/x-lines+json," + quote('{"ID": "a"}\n'),
            "Invalid mimetype application/x-lines+json!",
        ),
        ("data:text/plain,a", "Loading entities from text/plain files is not implemented!"),
        ("data:application/json,%5B", "Expecting value: line 1 column 2 (char 1)"),
    ],
)
def test_bad_inputs_fail_with_their_reason(corral_harness: Harness, url: str, error: str) -> None:
    run = corral_harness(plugin).run({"inputFileUrl": url})
    assert (run.status, run.error) == ("FAILURE", error)

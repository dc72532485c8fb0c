from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from corral_plugin.testing import Output, PluginHarness

from plugin import plugin

Harness = Callable[..., PluginHarness]

ENTITIES = [
    {"ID": "a", "href": "http://e/a", "x": 1, "y": "p"},
    {"ID": "b", "href": "http://e/b", "x": 2, "y": "q"},
    {"ID": "c", "href": "http://e/c", "x": 3, "y": "r"},
    {"ID": "d", "href": "http://e/d", "x": 4, "y": "s"},
]
JSON_URL = "data:application/json," + quote(json.dumps(ENTITIES))
CSV_TEXT = "ID,href,x,y\r\n" + "".join(
    f"{e['ID']},{e['href']},{e['x']},{e['y']}\r\n" for e in ENTITIES
)
CSV_URL = "data:text/csv;charset=utf-8," + quote(CSV_TEXT)


def csv_text(*rows: list[str]) -> str:
    return "".join(",".join(f'"{cell}"' for cell in row) + "\r\n" for row in rows)


def only_output(h: PluginHarness, url: str, **inputs: Any) -> Output:
    values = {"inputFileUrl": url, "attributeFilterStrategy": "BLOCKLIST", "rowSampling": "FIRST_N"}
    run = h.run({**values, **inputs})
    assert run.status == "SUCCESS", run.error
    assert run.log == ["Filter successful."]
    [output] = run.outputs.values()
    assert output.data_type == "entity_filter_output"
    return output


def test_metadata_keeps_the_old_plugin_and_form() -> None:
    metadata = plugin.metadata()
    assert (metadata.name, metadata.version, metadata.title) == (
        "entity-filter",
        "v0.2.1",
        "Entity loader/filter",
    )
    assert metadata.description == (
        "Loads and filters entities from a file that contains a list of entities."
    )
    assert list(metadata.tags) == ["preprocessing", "filter", "sample"]
    assert [f.field for f in metadata.inputs] == [
        "inputFileUrl",
        "attributes",
        "attributeFilterStrategy",
        "nRows",
        "rowSampling",
        "idList",
    ]
    choices = {f.field: [(c.value, c.label) for c in f.choices] for f in metadata.inputs}
    assert choices["attributeFilterStrategy"] == [
        ("ALLOWLIST", "Allowlist"),
        ("BLOCKLIST", "Blocklist"),
    ]
    assert choices["rowSampling"] == [
        ("RANDOM", "Randomly"),
        ("FIRST_N", "First n (Number of Rows)"),
        ("ALL_ROWS", "All Rows"),
    ]
    [data_input] = metadata.data_inputs
    assert (data_input.data_type, data_input.parameter) == ("entity/list", "inputFileUrl")
    assert list(data_input.content_types) == ["application/json", "text/csv"]
    [data_output] = metadata.data_outputs
    assert data_output.data_type == "entity/list"
    assert list(data_output.content_types) == ["application/json", "text/csv"]


def test_columns_only_on_json_keeps_every_row(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    output = only_output(h, JSON_URL, attributes="x", attributeFilterStrategy="ALLOWLIST")
    assert output.content_type == "application/json"
    assert output.name.startswith("filtered_entities_setting_Allowlist_rows_-1_sampling_-1_from_")
    assert output.name.endswith(".json")
    assert output.text == (
        '[{"ID":"a","x":1},{"ID":"b","x":2},{"ID":"c","x":3},{"ID":"d","x":4}]\n'
    )
    blocked = only_output(h, JSON_URL, attributes="ID,href,y")
    assert blocked.json() == [{"ID": e["ID"], "x": e["x"]} for e in ENTITIES]
    unchanged = only_output(h, JSON_URL)
    assert unchanged.json() == ENTITIES
    only_id = only_output(h, JSON_URL, attributeFilterStrategy="ALLOWLIST")
    assert only_id.json() == [{"ID": e["ID"]} for e in ENTITIES]


def test_columns_only_on_csv_writes_csv(corral_harness: Harness) -> None:
    h = corral_harness(plugin)
    output = only_output(h, CSV_URL, attributes="y,x", attributeFilterStrategy="ALLOWLIST")
    assert output.content_type == "text/csv"
    assert output.name.endswith(".csv")
    assert output.text == csv_text(
        ["ID", "x", "y"], ["a", "1", "p"], ["b", "2", "q"], ["c", "3", "r"], ["d", "4", "s"]
    )
    blocked = only_output(h, CSV_URL, attributes="href,y")
    assert blocked.text == csv_text(["ID", "x"], ["a", "1"], ["b", "2"], ["c", "3"], ["d", "4"])


@pytest.mark.parametrize("url", [JSON_URL, CSV_URL])
def test_first_n_rows(corral_harness: Harness, url: str) -> None:
    output = only_output(corral_harness(plugin), url, nRows=2, attributes="href,x,y")
    assert "_setting_Blocklist_rows_2_sampling_2_from_" in output.name
    if url == JSON_URL:
        assert output.json() == [{"ID": "a"}, {"ID": "b"}]
    else:
        assert output.text == csv_text(["ID"], ["a"], ["b"])


@pytest.mark.parametrize("url", [JSON_URL, CSV_URL])
def test_an_id_list_then_rows_to_fill_up(corral_harness: Harness, url: str) -> None:
    h = corral_harness(plugin)
    ids = only_output(h, url, idList="d,b", attributes="ID,x", attributeFilterStrategy="ALLOWLIST")
    assert "_rows_2_sampling_0_from_" in ids.name
    filled = only_output(
        h, url, idList="d,b", nRows=3, attributes="ID,x", attributeFilterStrategy="ALLOWLIST"
    )
    assert "_rows_3_sampling_1_from_" in filled.name
    if url == JSON_URL:
        assert ids.json() == [{"ID": "b", "x": 2}, {"ID": "d", "x": 4}]
        assert filled.json() == [{"ID": "b", "x": 2}, {"ID": "d", "x": 4}, {"ID": "a", "x": 1}]
    else:
        assert ids.text == csv_text(["ID", "x"], ["b", "2"], ["d", "4"])
        assert filled.text == csv_text(["ID", "x"], ["b", "2"], ["d", "4"], ["a", "1"])


@pytest.mark.parametrize("url", [JSON_URL, CSV_URL])
def test_random_rows_are_a_sample_of_the_others(corral_harness: Harness, url: str) -> None:
    h = corral_harness(plugin)
    seen: set[str] = set()
    for seed in range(20):
        random.seed(seed)
        output = only_output(
            h,
            url,
            idList="c",
            nRows=3,
            rowSampling="RANDOM",
            attributes="ID",
            attributeFilterStrategy="ALLOWLIST",
        )
        if url == JSON_URL:
            ids = [e["ID"] for e in output.json()]
        else:
            ids = [line.strip('"') for line in output.text.split("\r\n")[1:-1]]
        assert ids[0] == "c" and len(ids) == 3 and len(set(ids)) == 3
        seen.update(ids[1:])
    assert seen == {"a", "b", "d"}


@pytest.mark.parametrize("url", [JSON_URL, CSV_URL])
def test_all_rows_ignores_the_number_of_rows(corral_harness: Harness, url: str) -> None:
    output = only_output(corral_harness(plugin), url, nRows=1, rowSampling="ALL_ROWS")
    assert "_rows_-1_sampling_-1_from_" in output.name
    if url == JSON_URL:
        assert output.json() == ENTITIES
    else:
        assert output.text == csv_text(
            ["ID", "href", "x", "y"], *[[str(v) for v in e.values()] for e in ENTITIES]
        )


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        ({"idList": "a,zz"}, "The following ID's could not be found: {'zz'}"),
        (
            {"nRows": 5},
            "Number of rows requested is greater than number of rows in input file!",
        ),
        ({"nRows": 3, "idList": "a,b,c,d"}, "Length of ID list greater than number of rows!"),
        (
            {"rowSampling": "ALL_ROWS", "idList": "a"},
            "Length of ID list greater than number of rows!",
        ),
        ({"nRows": 0}, "invalid inputs: nRows: Number of Rows must be a positive number."),
        ({"rowSampling": "SOME"}, "invalid inputs: rowSampling: Not a valid choice."),
        (
            {"inputFileUrl": "data:text/plain,a"},
            "Loading entities from text/plain files is not implemented!",
        ),
        (
            {"inputFileUrl": "data:application/json,%5B"},
            "Expecting value: line 1 column 2 (char 1)",
        ),
        (
            {"inputFileUrl": "ftp://example.invalid/e.json"},
            "unsupported data URL scheme 'ftp' in 'ftp://example.invalid/e.json'",
        ),
        (
            {"inputFileUrl": "file://localhost/etc/hostname"},
            "file:// data URLs are not allowed for this plugin",
        ),
    ],
)
def test_bad_inputs_fail_with_their_reason(
    corral_harness: Harness, inputs: dict[str, Any], error: str
) -> None:
    values = {
        "inputFileUrl": JSON_URL,
        "attributeFilterStrategy": "BLOCKLIST",
        "rowSampling": "FIRST_N",
    }
    run = corral_harness(plugin).run({**values, **inputs})
    assert (run.status, run.error) == ("FAILURE", error)
    assert run.outputs == {}


def test_json_lines_stay_json_lines_under_the_old_csv_name(corral_harness: Harness) -> None:
    lines = "".join(json.dumps(e) + "\n" for e in ENTITIES)
    url = "data:application/X-lines+json," + quote(lines)
    output = only_output(corral_harness(plugin), url, nRows=1, attributes="href,y")
    assert output.content_type == "application/x-lines+json"
    assert output.name.endswith(".csv")
    assert output.text == '{"ID": "a", "x": 1}\n'

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from corral_plugin import _proto
from corral_plugin.testing import PluginHarness, TaskRun

from plugin import plugin

Harness = Callable[..., PluginHarness]
KINDS = ("train_data", "train_labels", "test_data", "test_labels")
TYPES = ("entity/vector", "entity/label", "entity/vector", "entity/label")
EXTRA = {
    "two_spirals": {"noise": "0.7", "turns": "1.52"},
    "checkerboard": {},
    "blobs": {"centers": "4"},
    "checkerboard_3d": {},
    "blobs_3d": {"centers": "3"},
}


def create(harness: PluginHarness, kind: str, train: int, test: int, seed: int = 7) -> TaskRun:
    np.random.seed(seed)
    inputs = {"datasetType": kind, "numTrainPoints": train, "numTestPoints": test}
    run = harness.run({**inputs, **EXTRA[kind]})
    assert run.status == "SUCCESS", run.error
    assert run.log == ["Result stored in file"]
    return run


def entities(run: TaskRun) -> list[list[dict[str, Any]]]:
    return [output.json() for output in run.outputs.values()]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["ID"] for item in items]


def kind_name(number: int) -> str:
    enum_type = _proto.POOL.FindEnumTypeByName("corral.plugin.v1.FieldKind")
    return str(enum_type.values_by_number[number].name).removeprefix("FIELD_KIND_")


def test_the_metadata_is_the_old_plugins(corral_harness: Harness) -> None:
    meta = corral_harness(plugin).metadata()
    assert (meta.name, meta.version, meta.title) == ("data-creator", "v0.2.3", "Data Creation")
    assert meta.description == "A plugin to create datasets."
    assert list(meta.tags) == ["data-loading", "data-synthesizing"]
    assert plugin.identifier == "data-creator@v0-2-3"
    assert list(meta.data_inputs) == []
    assert [(d.data_type, list(d.content_types)) for d in meta.data_outputs] == [
        (t, ["application/json"]) for t in TYPES
    ]
    form = [(f.field, kind_name(f.kind), f.required) for f in meta.inputs]
    assert form == [
        ("datasetType", "CHOICE", True),
        ("numTrainPoints", "INTEGER", True),
        ("numTestPoints", "INTEGER", True),
        ("noise", "NUMBER", False),
        ("turns", "NUMBER", False),
        ("centers", "INTEGER", False),
    ]
    assert [(c.value, c.label) for c in meta.inputs[0].choices] == [
        ("two_spirals", "Two Spirals"),
        ("checkerboard", "Checkerboard"),
        ("blobs", "Blobs"),
        ("checkerboard_3d", "3D Checkerboard"),
        ("blobs_3d", "3D Blobs"),
    ]
    assert all(not f.HasField("default") for f in meta.inputs)


@pytest.mark.parametrize("kind", list(EXTRA))
def test_each_dataset_type_gives_four_entity_files(corral_harness: Harness, kind: str) -> None:
    run = create(corral_harness(plugin), kind, 12, 4)
    size = 12 if kind == "two_spirals" else 4  # spirals: 2 * 16 - 12 = 20 test points, cut to 12
    counts = (12, 12, size, size)
    names = [
        f"{k}_data-creator_type_{kind}_amount_{n}.json" for k, n in zip(KINDS, counts, strict=True)
    ]
    assert list(run.outputs) == names
    outputs = list(run.outputs.values())
    assert [(o.data_type, o.content_type) for o in outputs] == [
        (t, "application/json") for t in TYPES
    ]
    train_x, train_y, test_x, test_y = entities(run)
    dims = [f"dim{i}" for i in range(3 if kind.endswith("3d") else 2)]
    for item in train_x + test_x:
        assert list(item) == ["ID", "href", *dims] and item["href"] == ""
        assert all(isinstance(item[d], float) for d in dims)
    for item in train_y + test_y:
        assert list(item) == ["ID", "href", "label"] and isinstance(item["label"], int)
    assert ids(train_x) == ids(train_y) == [str(i) for i in range(12)]
    assert ids(test_x) == ids(test_y)
    if kind.startswith("checkerboard"):
        for point, label in zip(train_x + test_x, train_y + test_y, strict=True):
            values = [point[d] for d in dims]
            assert all(abs(v) >= 0.2 for v in values)
            assert label["label"] == sum(v < 0 for v in values) % 2
    labels = {item["label"] for item in train_y + test_y}
    assert labels <= set(range(int(EXTRA[kind].get("centers", 2))))


def test_files_are_compact_json_lines(corral_harness: Harness) -> None:
    run = create(corral_harness(plugin), "checkerboard", 2, 1)
    for output in run.outputs.values():
        assert output.text.startswith('[{"ID":"') and output.text.endswith("}]\n")
        assert " " not in output.text


def test_test_ids_start_at_the_number_of_test_points(corral_harness: Harness) -> None:
    harness = corral_harness(plugin)
    assert ids(entities(create(harness, "checkerboard", 10, 5))[2]) == [
        str(i) for i in range(5, 10)
    ]
    # More test than training points: cut to the number of training points.
    test_x, test_y = entities(create(harness, "blobs", 5, 10))[2:]
    assert ids(test_x) == ids(test_y) == [str(i) for i in range(10, 15)]
    # Two spirals: 2 * 15 - 10 = 20 test points, cut to 10.
    run = create(harness, "two_spirals", 10, 5)
    assert list(run.outputs)[2] == "test_data_data-creator_type_two_spirals_amount_10.json"
    assert ids(entities(run)[2]) == [str(i) for i in range(20, 30)]


def test_no_test_points_gives_empty_test_files(corral_harness: Harness) -> None:
    run = create(corral_harness(plugin), "checkerboard_3d", 3, 0)
    outputs = list(run.outputs.values())
    assert outputs[2].name == "test_data_data-creator_type_checkerboard_3d_amount_0.json"
    assert [o.text for o in outputs[2:]] == ["[]\n", "[]\n"]


def test_the_same_global_seed_gives_the_same_bytes(corral_harness: Harness) -> None:
    harness = corral_harness(plugin)
    for kind in EXTRA:
        first, again = (create(harness, kind, 20, 6, seed=42) for _ in range(2))
        other = create(harness, kind, 20, 6, seed=43)
        data = [[o.data for o in run.outputs.values()] for run in (first, again, other)]
        assert data[0] == data[1] and data[0] != data[2]


REQUIRED = "Required for selected dataset type."
SPIRALS = {"datasetType": "two_spirals", "numTrainPoints": "10", "numTestPoints": "5"}
BAD_SIZES = {"numTrainPoints": "0", "numTestPoints": "-1", "noise": "-0.5", "turns": "0"}


@pytest.mark.parametrize(
    ("inputs", "errors"),
    [
        (SPIRALS, [f"noise: {REQUIRED}", f"turns: {REQUIRED}"]),
        ({**SPIRALS, "datasetType": "blobs"}, [f"centers: {REQUIRED}"]),
        (
            {**SPIRALS, **BAD_SIZES},
            [
                "numTrainPoints: Must be greater than or equal to 1.",
                "numTestPoints: Must be greater than or equal to 0.",
                "noise: Must be greater than or equal to 0.",
                "turns: Must be greater than 0.",
            ],
        ),
        ({**SPIRALS, "datasetType": "spirals"}, ["datasetType: Not a valid choice."]),
    ],
)
def test_invalid_inputs_fail_the_task(
    corral_harness: Harness, inputs: dict[str, str], errors: list[str]
) -> None:
    run = corral_harness(plugin).run(inputs)
    assert run.status == "FAILURE"
    assert run.error == "invalid inputs: " + "; ".join(errors)
    assert run.outputs == {}

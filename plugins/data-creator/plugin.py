"""data-creator v0.2.3: creates datasets (two spirals, checkerboards, Gaussian blobs)
split into training and test entities with their labels."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from corral_plugin import Context, DataOutput, Plugin
from corral_plugin.qhana import STORE, save_entities

from backend.datasets import create_dataset
from schemas import InputParameters, InputParametersSchema

JSON = "application/json"

plugin = Plugin(
    "data-creator",
    "v0.2.3",
    title="Data Creation",
    description="A plugin to create datasets.",
    type="dataloader",
    tags=["data-loading", "data-synthesizing"],
    inputs=InputParametersSchema,
    data_inputs=[],
    data_outputs=[
        DataOutput("entity/vector", [JSON]),
        DataOutput("entity/label", [JSON]),
        DataOutput("entity/vector", [JSON]),
        DataOutput("entity/label", [JSON]),
    ],
)


def vectors(ids: Iterable[str], points: Iterable[Sequence[float]]) -> list[dict[str, Any]]:
    """Point entities ``{"ID", "href", "dim0", "dim1", ...}``, as many as the shorter input."""
    return [
        {"ID": id_, "href": "", **{f"dim{i}": x for i, x in enumerate(point)}}
        for id_, point in zip(ids, points, strict=False)
    ]


def labels(ids: Iterable[str], values: Iterable[int]) -> list[dict[str, Any]]:
    """Label entities ``{"ID", "href", "label"}``, as many as the shorter input."""
    return [
        {"ID": id_, "href": "", "label": label} for id_, label in zip(ids, values, strict=False)
    ]


@plugin.task
def run(ctx: Context, params: InputParameters) -> None:
    train_x, train_y, test_x, test_y = create_dataset(
        params.dataset_type,
        params.num_train_points,
        params.num_test_points,
        noise=params.noise,
        turns=params.turns,
        centers=params.centers,
    )
    # As in QHAna: test IDs start at the number of test points and there are as
    # many as training points, so they may repeat training IDs, and the test set
    # is cut to the size of the training set.
    train_ids = [str(i) for i in range(len(train_x))]
    test_ids = [str(i) for i in range(len(test_x), len(train_x) + len(test_x))]
    outputs = [
        ("train_data", vectors(train_ids, train_x), "entity/vector"),
        ("train_labels", labels(train_ids, train_y), "entity/label"),
        ("test_data", vectors(test_ids, test_x), "entity/vector"),
        ("test_labels", labels(test_ids, test_y), "entity/label"),
    ]
    info = f"_data-creator_type_{params.dataset_type.name}"
    for kind, entities, data_type in outputs:
        with io.StringIO() as file:
            save_entities(entities, file, JSON)
            name = f"{kind}{info}_amount_{len(entities)}.json"
            STORE.persist_task_result(ctx, file, name, data_type, JSON)
    ctx.log("Result stored in file")


if __name__ == "__main__":
    plugin.run()

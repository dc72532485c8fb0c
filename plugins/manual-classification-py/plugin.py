"""manual-classification v0.2.1: a person annotates classes for entities, one
class per step (`annotate-class-1`, `annotate-class-2`, ...) until they finish."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
from corral_plugin import Context, DataInput, DataOutput, Plugin, StepRequest, TaskError, fields
from corral_plugin.fields import Field
from corral_plugin.qhana import (
    FileUrl,
    FrontendFormBaseSchema,
    ensure_dict,
    get_mimetype,
    load_entities,
    open_url,
    save_entities,
)
from corral_plugin.schema import SchemaForm

State = dict[str, Any]

JSON = "application/json"
CSV = "text/csv"
EXTENSIONS = {JSON: ".json", CSV: ".csv"}
STEP = "annotate-class"


class LoadParametersSchema(FrontendFormBaseSchema):
    input_file_url = FileUrl(
        required=True,
        allow_none=False,
        data_content_types=["text/csv", "application/json", "application/X-lines+json"],
        data_input_type="entity",
        metadata={
            "label": "Entities URL",
            "description": "URL to a json file with a list of entities.",
            "input_type": "text",
        },
    )


class ClassificationSchema(FrontendFormBaseSchema):
    class_identifier = ma.fields.String(
        required=True,
        allow_none=False,
        metadata={
            "label": "Class Name",
            "description": "Name of the class to be annotated",
            "input_type": "textfield",
        },
    )


DONE = fields.boolean("done", "Finish after this class")


@dataclass(frozen=True)
class Classification:
    """A submitted step: the class and the IDs of the entities checked for it."""

    class_identifier: str
    checked: frozenset[str]
    done: bool


class ClassificationForm:
    """The form of a step: the class name, a checkbox per entity (keyed by its ID,
    as the old page's checkboxes were), and `done`. Loading keeps every checkbox,
    as the old step endpoints did (``unknown=INCLUDE``)."""

    def __init__(self, state: State | None = None) -> None:
        self._schema = SchemaForm(ClassificationSchema)
        self._own = {f.key for f in self._schema.fields()} | {DONE.key}
        self._boxes = [] if state is None else self._checkboxes(state)

    def _checkboxes(self, state: State) -> list[Field]:
        boxes: dict[str, Field] = {}
        others = state["attr_list"][1:]
        for entity in state["entity_list"]:
            key = str(entity["ID"])
            if key in self._own:
                raise TaskError(f"The entity ID {key!r} is also the name of a form field.")
            summary = ", ".join(f"{a}: {entity[a]}" for a in others if a in entity)
            boxes.setdefault(key, fields.boolean(key, key, help=summary))
        return list(boxes.values())

    def fields(self) -> Sequence[Field]:
        return [*self._schema.fields(), *self._boxes, DONE]

    def load(self, raw: Mapping[str, str]) -> Classification:
        values = self._schema.load(raw)
        checked = frozenset(
            key
            for key, value in raw.items()
            if key not in self._own and fields.boolean(key).convert(value)
        )
        return Classification(values["class_identifier"], checked, DONE.convert(raw.get("done")))


plugin = Plugin(
    "manual-classification",
    "v0.2.1",
    title="Manual Classification",
    description="Manually annotate classes for data sets from MUSE database.",
    tags=["preprocessing", "data-annotation", "manual"],
    inputs=LoadParametersSchema,
    data_inputs=[DataInput("entity/list", [JSON, CSV], "inputFileUrl")],
    data_outputs=[DataOutput("entity/list", [JSON, CSV])],
)


@plugin.task
def load(ctx: Context, params: dict[str, Any]) -> StepRequest:
    """Loads the entities and asks for the first class."""
    url: str = params["input_file_url"]
    with open_url(url) as response:
        mimetype = get_mimetype(response) or ""
        try:
            entities = list(ensure_dict(load_entities(response, mimetype)))
        except ValueError as error:
            raise TaskError(str(error)) from error
    if mimetype not in EXTENSIONS:
        # The old plugin failed so only when it wrote the result, after every step.
        raise TaskError(f"Invalid mimetype {mimetype}!")
    if not entities:
        raise TaskError("No entities could be loaded!")
    if any("ID" not in entity for entity in entities):
        raise TaskError("Every entity needs an ID.")
    attributes = dict.fromkeys(key for entity in entities for key in entity)
    attributes.pop("ID")
    state: State = {
        "step_id": 1,
        "mimetype": mimetype,
        "entity_list": entities,
        "entity_annotation": {str(entity["ID"]): [] for entity in entities},
        "attr_list": ["ID", *attributes],
        "input_file_url": url,
    }
    ctx.log("Classification pre-rendering successful.")
    return ask(ctx, state)


def ask(ctx: Context, state: State) -> StepRequest:
    """The step `annotate-class-<n>` for the state's step number ``n``."""
    n = state["step_id"]
    ctx.progress(round(n / (n + 1) * 100), 100, unit="%")
    return ctx.step(f"{STEP}-{n}", state=state, form=ClassificationForm(state))


@plugin.step(f"{STEP}-*", inputs=ClassificationForm())
def annotate(ctx: Context, classification: Classification, state: State) -> StepRequest | None:
    """Adds the class to the checked entities, then asks for the next class or finishes."""
    for entity_id, classes in state["entity_annotation"].items():
        if entity_id in classification.checked and classification.class_identifier not in classes:
            classes.append(classification.class_identifier)
    ctx.log("Adding new class successful.")
    if not classification.done:
        state["step_id"] += 1
        return ask(ctx, state)
    save_classification(ctx, state)
    ctx.log("Manual classification successful.")
    ctx.progress(100, 100, unit="%")
    return None


def save_classification(ctx: Context, state: State) -> None:
    """Writes the entities, each with its classes as `classification`."""
    mimetype: str = state["mimetype"]
    annotation = state["entity_annotation"]
    entities = [
        {**entity, "classification": annotation[str(entity["ID"])]}
        for entity in state["entity_list"]
    ]
    columns = [a for a in state["attr_list"] if a != "classification"] + ["classification"]
    if mimetype == CSV:
        # CSV gets the columns it needs (the old plugin gave none and failed), and
        # the classes as a JSON list in one cell.
        entities = [
            {**entity, "classification": json.dumps(entity["classification"])}
            for entity in entities
        ]
    output = io.StringIO()
    save_entities(entities, output, mimetype, attributes=columns)
    ctx.output(
        "classified_entities" + EXTENSIONS[mimetype],
        output.getvalue(),
        data_type="manual_classification_output",
        content_type=mimetype,
    )


if __name__ == "__main__":
    plugin.run()

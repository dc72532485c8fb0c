"""The form of the data-creator plugin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import marshmallow as ma
from corral_plugin.qhana import EnumField, FrontendFormBaseSchema
from marshmallow import ValidationError, post_load, validate, validates_schema

from backend.datasets import DataTypeEnum

REQUIRED_FIELDS_BY_TYPE: dict[DataTypeEnum, frozenset[str]] = {
    DataTypeEnum.two_spirals: frozenset({"noise", "turns"}),
    DataTypeEnum.checkerboard: frozenset(),
    DataTypeEnum.blobs: frozenset({"centers"}),
    DataTypeEnum.checkerboard_3d: frozenset(),
    DataTypeEnum.blobs_3d: frozenset({"centers"}),
}
"""The optional fields each dataset type needs."""

DATASET_TYPES = """Currently available dataset types are:
- Two Spiral: Creates two spirals, spiraling out from the same point. \
Both spirals have a different label.
- Checkerboard: Creates a 2x2 checkerboard pattern.
- Blobs: Creates isotropic Gaussian blobs for clustering.
- 3D Checkerboard: Creates a 3D 2x2x2 checkerboard pattern.
- 3D Blobs: Creates 3D isotropic Gaussian blobs for clustering."""


@dataclass
class InputParameters:
    dataset_type: DataTypeEnum
    num_train_points: int
    num_test_points: int
    turns: float | None = None
    noise: float | None = None
    centers: int | None = None


def _number(label: str, description: str) -> dict[str, str]:
    return {"label": label, "description": description, "input_type": "number"}


class InputParametersSchema(FrontendFormBaseSchema):
    dataset_type = EnumField(
        DataTypeEnum,
        required=True,
        allow_none=False,
        metadata={"label": "Dataset Type", "description": DATASET_TYPES, "input_type": "select"},
    )
    num_train_points = ma.fields.Integer(
        required=True,
        allow_none=False,
        validate=validate.Range(min=1),
        metadata=_number("No. Training Points", "Determines the size of the training dataset."),
    )
    num_test_points = ma.fields.Integer(
        required=True,
        allow_none=False,
        validate=validate.Range(min=0),
        metadata=_number("No. Test Points", "Determines the size of the test dataset."),
    )
    noise = ma.fields.Float(
        required=False,
        allow_none=True,
        validate=validate.Range(min=0),
        metadata=_number("Noise", "Gives the dataset creation some noise"),
    )
    turns = ma.fields.Float(
        required=False,
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False),
        metadata=_number("Turns", "Determines the turns of the spiral dataset"),
    )
    centers = ma.fields.Integer(
        required=False,
        allow_none=True,
        validate=validate.Range(min=1),
        metadata=_number("No. Centers", "Determines the number of Blobs"),
    )

    @validates_schema
    def validate_required_for_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        dataset_type = data.get("dataset_type")
        if not isinstance(dataset_type, DataTypeEnum):
            raise ValidationError({"dataset_type": [f"Unknown dataset type: {dataset_type!r}."]})
        missing = sorted(f for f in REQUIRED_FIELDS_BY_TYPE[dataset_type] if data.get(f) is None)
        if missing:
            raise ValidationError({f: ["Required for selected dataset type."] for f in missing})

    @post_load
    def make_input_params(self, data: dict[str, Any], **kwargs: Any) -> InputParameters:
        return InputParameters(**data)

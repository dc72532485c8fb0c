"""The datasets: two spirals, 2D and 3D checkerboards, 2D and 3D Gaussian blobs.

Every draw comes from numpy's global random state, in a fixed order, so a
seeded state (``np.random.seed``) gives the same datasets every time.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import make_blobs

Points: TypeAlias = NDArray[np.float64]
Labels: TypeAlias = NDArray[np.int_]
T = TypeVar("T")
Split = tuple[list[list[float]], list[int], list[list[float]], list[int]]


class DataTypeEnum(Enum):
    """The dataset types: the form submits the name, the value is its label."""

    two_spirals = "Two Spirals"
    checkerboard = "Checkerboard"
    blobs = "Blobs"
    checkerboard_3d = "3D Checkerboard"
    blobs_3d = "3D Blobs"


def two_spirals(size: int, noise: float, turns: float) -> tuple[Points, Labels]:
    """``2 * size`` points on two spirals around the origin, labelled 0 and 1."""
    angle = np.sqrt(np.random.rand(size, 1)) * turns * (2 * np.pi)
    x = -np.cos(angle) * angle + np.random.rand(size, 1) * noise
    y = np.sin(angle) * angle + np.random.rand(size, 1) * noise
    spiral = np.hstack((x, y))
    return np.vstack((spiral, -spiral)), np.repeat([0, 1], size)


def checkerboard(size: int, dims: int = 2) -> tuple[Points, Labels]:
    """``size`` points in [-1, 1)^dims, labelled 1 where an odd number of
    coordinates is negative, then pushed 0.2 away from every axis."""
    points = np.random.rand(size, dims) * 2 - 1
    labels = np.logical_xor.reduce(points < 0, axis=1).astype(int)
    return points + np.where(points > 0, 0.2, -0.2), labels


def blobs(size: int, centers: int, dims: int = 2) -> tuple[Points, Labels]:
    """``size`` points in isotropic Gaussian blobs around ``centers`` centers."""
    points, labels = make_blobs(n_samples=size, centers=centers, n_features=dims)
    return points, labels


def create_dataset(
    dataset_type: DataTypeEnum,
    num_train_points: int,
    num_test_points: int,
    *,
    noise: float | None = None,
    turns: float | None = None,
    centers: int | None = None,
) -> Split:
    """Training points and labels, then test points and labels, shuffled.

    Two spirals have ``2 * (train + test)`` points, so their test part holds
    the rest beyond the training points.
    """
    size = num_train_points + num_test_points
    if dataset_type is DataTypeEnum.two_spirals:
        points, labels = two_spirals(size, _given(noise, 0.7), _given(turns, 1.52))
    elif dataset_type is DataTypeEnum.checkerboard:
        points, labels = checkerboard(size)
    elif dataset_type is DataTypeEnum.blobs:
        points, labels = blobs(size, _given(centers, 4))
    elif dataset_type is DataTypeEnum.checkerboard_3d:
        points, labels = checkerboard(size, dims=3)
    elif dataset_type is DataTypeEnum.blobs_3d:
        points, labels = blobs(size, _given(centers, 4), dims=3)
    else:
        raise NotImplementedError(dataset_type)
    order = np.arange(len(points))
    np.random.shuffle(order)
    train, test = order[:num_train_points], order[num_train_points:]
    return (
        points[train].tolist(),
        labels[train].tolist(),
        points[test].tolist(),
        labels[test].tolist(),
    )


def _given(value: T | None, default: T) -> T:
    return default if value is None else value

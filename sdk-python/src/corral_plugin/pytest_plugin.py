"""The pytest plugin of the SDK (loaded automatically where pytest is installed):
the ``corral_harness`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .plugin import Plugin
from .testing import PluginHarness


@pytest.fixture
def corral_harness() -> Iterator[Callable[..., PluginHarness]]:
    """Makes a :class:`PluginHarness` for a plugin; closes it after the test."""
    harnesses: list[PluginHarness] = []

    def make(plugin: Plugin, **options: Any) -> PluginHarness:
        harness = PluginHarness(plugin, **options)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral_plugin.testing import PluginHarness


@pytest.fixture
def harness(corral_harness: Callable[..., PluginHarness]) -> Callable[..., PluginHarness]:
    return corral_harness

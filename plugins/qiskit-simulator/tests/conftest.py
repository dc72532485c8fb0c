"""The shared checks are asserts in an installed module: pytest rewrites them too, so a failed
one shows its values."""

import pytest

pytest.register_assert_rewrite("qiskit_simulator_common.testing")

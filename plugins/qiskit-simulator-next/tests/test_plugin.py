"""qiskit-simulator v2.0.0 on qiskit 2: the checks every version passes (see
qiskit_simulator_common.testing), with this version's expectations."""

from qiskit_simulator_common import testing
from qiskit_simulator_common.testing import Harness

from plugin import plugin


def test_metadata_is_the_old_plugins(corral_harness: Harness) -> None:
    testing.check_metadata(corral_harness, plugin, "v2.0.0")


def test_a_bell_circuit_counts_only_00_and_11(corral_harness: Harness) -> None:
    testing.check_bell_counts(corral_harness, plugin, backend="aer_simulator")


def test_versions_are_qiskit_2_and_numpy_2(corral_harness: Harness) -> None:
    testing.check_versions(corral_harness, plugin, {"qiskit": "2.", "numpy": "2."})


def test_statevector_and_execution_options(corral_harness: Harness) -> None:
    testing.check_statevector_and_execution_options(corral_harness, plugin)


def test_a_text_that_is_no_circuit_fails_clearly(corral_harness: Harness) -> None:
    testing.check_no_circuit_fails_clearly(corral_harness, plugin)

"""qiskit-simulator v1.0.1 on qiskit 0.43: the checks every version passes (see
qiskit_simulator_common.testing), with this version's expectations."""

from qiskit_simulator_common import testing
from qiskit_simulator_common.testing import Harness

from plugin import plugin


def test_metadata_is_the_old_plugins(corral_harness: Harness) -> None:
    testing.check_metadata(corral_harness, plugin, "v1.0.1")


def test_a_bell_circuit_counts_only_00_and_11(corral_harness: Harness) -> None:
    testing.check_bell_counts(corral_harness, plugin, backend="qasm_simulator")


def test_versions_are_qiskit_0_43_and_numpy_1(corral_harness: Harness) -> None:
    testing.check_versions(corral_harness, plugin, {"qiskit": "0.43.", "numpy": "1."})


def test_statevector_and_execution_options(corral_harness: Harness) -> None:
    testing.check_statevector_and_execution_options(corral_harness, plugin)


def test_a_text_that_is_no_circuit_fails_clearly(corral_harness: Harness) -> None:
    testing.check_no_circuit_fails_clearly(corral_harness, plugin)

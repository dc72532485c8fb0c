"""qiskit-simulator v1.0.1: runs an OpenQASM circuit on a simulator packaged with qiskit.

QHAna's plugin on its own stack, qiskit 0.43 (qiskit-terra 0.24, qiskit-aer 0.12, numpy 1),
in qiskit's legacy API (``execute`` and ``Aer``). Its outputs are the old plugin's, plus
``versions.json``: the versions of qiskit, qiskit-aer and numpy the circuit ran on. The form,
the task and the outputs are qiskit_simulator_common's; this file runs the circuit.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from corral_plugin import TaskError
from qiskit_simulator_common import Simulation, make_plugin


def load_circuit(qasm: str) -> Any:
    """The circuit of an OpenQASM 3 program, else of an OpenQASM 2 one."""
    from openqasm3.parser import QASM3ParsingError
    from qiskit import qasm2, qasm3

    try:
        return qasm3.loads(qasm)
    except (qasm3.QASM3ImporterError, QASM3ParsingError):
        try:
            return qasm2.loads(qasm)
        except qasm2.QASM2ParseError as error:
            raise TaskError(f"Not a valid OpenQASM circuit: {error}") from error


def simulate(qasm: str, shots: int | None, statevector: bool) -> Simulation:
    """The counting run of the circuit and (if asked for) its final statevector."""
    import numpy as np
    from qiskit import Aer, QiskitError, execute

    circuit = load_circuit(qasm)
    result = execute(circuit, Aer.get_backend("qasm_simulator"), shots=shots).result()
    if not result.success:
        raise TaskError("Circuit could not be simulated!")

    final = None
    if statevector:
        state = execute(circuit, Aer.get_backend("statevector_simulator")).result()
        if state.success:
            with suppress(QiskitError):
                final = [complex(value) for value in np.asarray(state.get_statevector())]

    counts = None
    if circuit.num_clbits:
        with suppress(QiskitError):
            counts = dict(result.get_counts())
    return Simulation(result, counts, final)


plugin = make_plugin("v1.0.1", simulate)


if __name__ == "__main__":
    plugin.run()

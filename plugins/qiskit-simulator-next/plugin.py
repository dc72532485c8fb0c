"""qiskit-simulator v2.0.0: runs an OpenQASM circuit on a simulator packaged with qiskit.

qiskit-simulator v1.0.1 moved to qiskit 2 (qiskit-aer 0.17+, numpy 2) and its current API
(``transpile`` and ``AerSimulator().run``): the same form and the same outputs, ``versions.json``
included. The form, the task and the outputs are qiskit_simulator_common's; this file runs the
circuit.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

# qiskit 2.5 and later (checked: 2.5.0, 2.6.2; 2.4.1 is fine) crash with SIGSEGV in
# QuantumCircuit() once the thread that first imported qiskit has ended, and tasks run
# in pool threads: import it here, in the main thread, which lives as long as the plugin.
import qiskit  # noqa: F401
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
    from qiskit import QiskitError, transpile
    from qiskit_aer import AerSimulator

    circuit = load_circuit(qasm)
    backend = AerSimulator()
    result = backend.run(transpile(circuit, backend), shots=shots).result()
    if not result.success:
        raise TaskError("Circuit could not be simulated!")

    final = None
    if statevector:
        # AerSimulator reports a state only where the circuit saves one.
        saving = circuit.copy()
        saving.save_statevector()
        simulator = AerSimulator(method="statevector")
        state = simulator.run(transpile(saving, simulator), shots=1).result()
        if state.success:
            with suppress(QiskitError):
                final = [complex(value) for value in np.asarray(state.get_statevector())]

    counts = None
    if circuit.num_clbits:
        with suppress(QiskitError):
            counts = dict(result.get_counts())
    return Simulation(result, counts, final)


plugin = make_plugin("v2.0.0", simulate)


if __name__ == "__main__":
    plugin.run()

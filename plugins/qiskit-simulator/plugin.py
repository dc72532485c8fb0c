"""qiskit-simulator v1.0.1: runs an OpenQASM circuit on a simulator packaged with qiskit.

QHAna's plugin on its own stack, qiskit 0.43 (qiskit-terra 0.24, qiskit-aer 0.12, numpy 1),
in qiskit's legacy API (``execute`` and ``Aer``). Its outputs are the old plugin's, plus
``versions.json``: the versions of qiskit, qiskit-aer and numpy the circuit ran on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any
from uuid import uuid4

import marshmallow as ma
from corral_plugin import Context, DataOutput, Plugin, TaskError
from corral_plugin.qhana import (
    FileUrl,
    FrontendFormBaseSchema,
    ensure_dict,
    get_mimetype,
    load_entities,
    open_url,
)
from marshmallow.validate import Range

JSON = "application/json"
TRUE = ("1", "yes", "Yes", "YES", "true", "True", "TRUE")


class QiskitSimulatorParametersSchema(FrontendFormBaseSchema):
    circuit = FileUrl(
        required=True,
        allow_none=False,
        data_input_type="executable/circuit",
        data_content_types="text/x-qasm",
        metadata={
            "label": "OpenQASM Circuit",
            "description": "URL to a quantum circuit in the OpenQASM format.",
            "input_type": "text",
        },
    )
    executionOptions = FileUrl(
        required=False,
        allow_none=True,
        data_input_type="provenance/execution-options",
        data_content_types=["text/csv", "application/json", "application/X-lines+json"],
        metadata={
            "label": "Execution Options (optional)",
            "description": "URL to a file containing execution options. (optional)",
            "input_type": "text",
        },
    )
    shots = ma.fields.Integer(
        required=False,
        allow_none=True,
        load_default=None,
        validate=Range(min=1, min_inclusive=True),
        metadata={
            "label": "Shots",
            "description": "The number of shots to simulate. If execution options are "
            "specified they will override this setting!",
            "input_type": "number",
        },
    )
    statevector = ma.fields.Bool(
        required=False,
        allow_none=True,
        load_default=False,
        metadata={"label": "Include Statevector", "description": "Include a statevector result."},
    )


plugin = Plugin(
    "qiskit-simulator",
    "v1.0.1",
    description="Allows execution of quantum circuits using a simulator packaged with qiskit.",
    tags=["circuit-executor", "qc-simulator", "qiskit", "qasm", "qasm-2", "qasm-3"],
    inputs=QiskitSimulatorParametersSchema,
    data_outputs=[
        DataOutput("entity/vector", [JSON], name="result-counts.json"),
        DataOutput("entity/vector", [JSON], name="result-statevector.json", required=False),
        DataOutput("provenance/trace", [JSON], name="result-trace.json"),
        DataOutput("provenance/execution-options", [JSON], name="execution-options.json"),
        DataOutput("provenance/versions", [JSON], name="versions.json"),
    ],
)


def installed_versions() -> dict[str, str]:
    """The versions of the packages the circuit runs on."""
    return {name: version(name) for name in ("qiskit", "qiskit-aer", "numpy")}


def execution_options(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """The form's options with the first entity of the execution options file over them."""
    options: dict[str, Any] = {
        "shots": params.get("shots"),
        "statevector": bool(params.get("statevector")),
    }
    url = params.get("executionOptions")
    if url:
        response = open_url(url)
        mimetype = get_mimetype(response)
        if mimetype is None:
            raise TaskError("Could not guess execution options mime type!")
        try:
            loaded = next(ensure_dict(load_entities(response, mimetype=mimetype)), {})
        except ValueError as error:
            raise TaskError(f"Could not load the execution options: {error}") from error
        ctx.log("loaded execution options: " + json.dumps(loaded))
        options.update(loaded)
    if isinstance(options["shots"], str):
        options["shots"] = int(options["shots"])
    if isinstance(options["statevector"], str):
        options["statevector"] = options["statevector"] in TRUE
    return options


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


def simulate_circuit(
    qasm: str, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, int], list[complex] | None]:
    """The trace, the counts and (if asked for) the final statevector of one run."""
    import numpy as np
    from qiskit import Aer, QiskitError, execute

    circuit = load_circuit(qasm)
    result = execute(circuit, Aer.get_backend("qasm_simulator"), shots=options["shots"]).result()
    if not result.success:
        raise TaskError("Circuit could not be simulated!")

    statevector = None
    if options["statevector"]:
        state = execute(circuit, Aer.get_backend("statevector_simulator")).result()
        if state.success:
            try:
                statevector = [complex(value) for value in np.asarray(state.get_statevector())]
            except QiskitError:
                statevector = None

    experiment = result.results[0]
    shots = experiment.shots
    if isinstance(shots, (tuple, list)):
        shots = abs(shots[-1] - shots[0])
    time_taken = result.time_taken
    time_execute = (getattr(result, "metadata", None) or {}).get("time_taken_execute", time_taken)
    trace = {
        "jobId": getattr(result, "job_id", None),
        "qobjId": getattr(result, "qobj_id", None),
        "qpuType": "simulator",
        "qpuVendor": "IBM",
        "qpuName": result.backend_name,
        "qpuVersion": result.backend_version,
        "seed": getattr(experiment, "seed_simulator", None),
        "shots": shots,
        "date": getattr(result, "date", None),
        "timeTaken": time_taken,
        "timeTakenIdle": 0,
        "timeTakenQpu": time_taken,
        "timeTakenQpuPrepare": time_taken - time_execute,
        "timeTakenQpuExecute": time_execute,
    }

    counts: dict[str, int] = {"": shots}
    if circuit.num_clbits:
        try:
            counts = dict(result.get_counts())
        except QiskitError:
            pass
    return trace, counts, statevector


def write(ctx: Context, name: str, data_type: str, entity: Mapping[str, Any]) -> None:
    ctx.output(name, json.dumps(entity, default=str), data_type=data_type, content_type=JSON)


@plugin.task
def execute_circuit(ctx: Context, params: Mapping[str, Any]) -> None:
    qasm = open_url(params["circuit"]).text
    options = execution_options(ctx, params)
    versions = installed_versions()
    ctx.log("versions: " + json.dumps(versions))
    trace, counts, statevector = simulate_circuit(qasm, options)

    experiment_id = str(uuid4())
    write(ctx, "result-trace.json", "provenance/trace", {**trace, "ID": experiment_id})
    write(ctx, "result-counts.json", "entity/vector", {**counts, "ID": experiment_id})
    if statevector is not None:
        width = len(str(len(statevector)))
        entity = {"ID": experiment_id}
        entity.update({f"{i:0{width}}": repr(value) for i, value in enumerate(statevector)})
        write(ctx, "result-statevector.json", "entity/vector", entity)

    previous = options.get("executorPlugin") or []
    if not isinstance(previous, list):
        previous = [previous]
    options.update(
        ID=experiment_id,
        executorPlugin=[*previous, plugin.identifier],
        shots=trace["shots"],
        qpuType=trace["qpuType"],
        qpuVendor=trace["qpuVendor"],
        qpuName=trace["qpuName"],
        qpuVersion=trace["qpuVersion"],
        seed=trace["seed"],
    )
    write(ctx, "execution-options.json", "provenance/execution-options", options)
    write(ctx, "versions.json", "provenance/versions", versions)


if __name__ == "__main__":
    plugin.run()

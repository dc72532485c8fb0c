"""What the versions of the qiskit-simulator plugin share: QHAna's form, the metadata and the
task, which loads the inputs, runs the circuit with the version's own qiskit (a
:data:`Simulate` function) and writes the outputs. This package needs no qiskit: it reads
qiskit's result only through the attributes every qiskit generation has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
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
PACKAGES = ("qiskit", "qiskit-aer", "numpy")


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


@dataclass(frozen=True)
class Simulation:
    """One run of a circuit: qiskit's ``Result`` of the counting run, its counts (``None``
    where the circuit has no classical bits or qiskit gives none) and its final statevector
    (``None`` unless asked for and given)."""

    result: Any
    counts: dict[str, int] | None
    statevector: list[complex] | None


Simulate = Callable[[str, int | None, bool], Simulation]
"""``simulate(qasm, shots, statevector)``: parses the OpenQASM program (raising
:class:`TaskError` if it is none) and runs ``shots`` of it (``None``: qiskit's default),
with its final statevector if ``statevector`` is true."""


def make_plugin(version: str, simulate: Simulate) -> Plugin:
    """The qiskit-simulator plugin in ``version``, running circuits with ``simulate``."""
    plugin = Plugin(
        "qiskit-simulator",
        version,
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

    @plugin.task
    def execute_circuit(ctx: Context, params: Mapping[str, Any]) -> None:
        qasm = open_url(params["circuit"]).text
        options = execution_options(ctx, params)
        versions = installed_versions()
        ctx.log("versions: " + json.dumps(versions))
        simulation = simulate(qasm, options["shots"], options["statevector"])
        trace = result_trace(simulation.result)
        counts = simulation.counts
        if counts is None:
            counts = {"": trace["shots"]}

        experiment_id = str(uuid4())
        write(ctx, "result-trace.json", "provenance/trace", {**trace, "ID": experiment_id})
        write(ctx, "result-counts.json", "entity/vector", {**counts, "ID": experiment_id})
        if simulation.statevector is not None:
            statevector = simulation.statevector
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

    return plugin


def installed_versions() -> dict[str, str]:
    """The versions of the packages the circuit runs on."""
    return {name: metadata.version(name) for name in PACKAGES}


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


def result_trace(result: Any) -> dict[str, Any]:
    """QHAna's trace of a run, from qiskit's ``Result`` of it."""
    experiment = result.results[0]
    shots = experiment.shots
    if isinstance(shots, (tuple, list)):
        shots = abs(shots[-1] - shots[0])
    time_taken = result.time_taken
    time_execute = (getattr(result, "metadata", None) or {}).get("time_taken_execute", time_taken)
    return {
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


def write(ctx: Context, name: str, data_type: str, entity: Mapping[str, Any]) -> None:
    ctx.output(name, json.dumps(entity, default=str), data_type=data_type, content_type=JSON)

"""The tests every version of the qiskit-simulator plugin passes, as checks its own test file
calls with ``corral_harness``, the plugin and what differs between the versions. They run
real tasks, so they run in the plugin's environment, on its qiskit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import quote

from corral_plugin import Plugin
from corral_plugin.testing import PluginHarness

Harness = Callable[..., PluginHarness]

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""
BELL_QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""
ENTANGLE = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\ncx q[0],q[1];\n'
OUTPUTS = [
    "result-trace.json",
    "result-counts.json",
    "execution-options.json",
    "versions.json",
]


def data_url(text: str, content_type: str = "text/x-qasm") -> str:
    return f"data:{content_type},{quote(text)}"


def check_metadata(corral_harness: Harness, plugin: Plugin, version: str) -> None:
    """The old plugin's metadata, in ``version``."""
    metadata = corral_harness(plugin).metadata()
    assert (metadata.name, metadata.version) == ("qiskit-simulator", version)
    assert plugin.identifier == "qiskit-simulator@" + version.replace(".", "-")
    assert metadata.title == "qiskit-simulator"
    assert "qasm-2" in metadata.tags
    assert [f.field for f in metadata.inputs] == [
        "circuit",
        "executionOptions",
        "shots",
        "statevector",
    ]
    assert [(d.parameter, d.data_type, d.required) for d in metadata.data_inputs] == [
        ("circuit", "executable/circuit", True),
        ("executionOptions", "provenance/execution-options", False),
    ]
    assert [(o.name, o.data_type, o.required) for o in metadata.data_outputs] == [
        ("result-counts.json", "entity/vector", True),
        ("result-statevector.json", "entity/vector", False),
        ("result-trace.json", "provenance/trace", True),
        ("execution-options.json", "provenance/execution-options", True),
        ("versions.json", "provenance/versions", True),
    ]


def check_bell_counts(corral_harness: Harness, plugin: Plugin, backend: str) -> None:
    """A Bell circuit counts only 00 and 11, on the simulator named ``backend``."""
    run = corral_harness(plugin).run({"circuit": data_url(BELL), "shots": 500})
    assert run.status == "SUCCESS", run.error
    assert list(run.outputs) == OUTPUTS
    assert {o.content_type for o in run.outputs.values()} == {"application/json"}

    counts = run.outputs["result-counts.json"]
    assert counts.data_type == "entity/vector"
    assert not counts.text.endswith("\n")
    values = counts.json()
    experiment_id = values.pop("ID")
    assert set(values) == {"00", "11"}
    assert sum(values.values()) == 500

    trace = run.outputs["result-trace.json"].json()
    assert trace["ID"] == experiment_id
    assert (trace["qpuName"], trace["shots"]) == (backend, 500)
    options = run.outputs["execution-options.json"].json()
    assert options["executorPlugin"] == [plugin.identifier]
    assert options["shots"] == 500


def check_versions(corral_harness: Harness, plugin: Plugin, prefixes: Mapping[str, str]) -> None:
    """An OpenQASM 3 circuit runs qiskit's default shots, on packages whose versions start
    with ``prefixes`` (by package name)."""
    run = corral_harness(plugin).run({"circuit": data_url(BELL_QASM3)})
    assert run.status == "SUCCESS", run.error
    counts = run.outputs["result-counts.json"].json()
    assert sum(v for k, v in counts.items() if k != "ID") == 1024  # qiskit's default shots
    versions = run.outputs["versions.json"].json()
    for name, prefix in prefixes.items():
        assert versions[name].startswith(prefix), (name, versions[name])
    assert "versions: " + run.outputs["versions.json"].text in run.log


def check_statevector_and_execution_options(corral_harness: Harness, plugin: Plugin) -> None:
    """The final statevector, asked for; the execution options file overrides the form and
    its executor plugins come first."""
    options = '{"shots": "10", "executorPlugin": ["circuit-loader@v0-1-0"]}'
    run = corral_harness(plugin).run(
        {
            "circuit": data_url(ENTANGLE),
            "statevector": True,
            "executionOptions": data_url(options, "application/json"),
        }
    )
    assert run.status == "SUCCESS", run.error
    assert "loaded execution options: " + options in run.log
    counts = run.outputs["result-counts.json"].json()
    assert counts[""] == 10
    state = run.outputs["result-statevector.json"].json()
    assert sorted(state) == ["0", "1", "2", "3", "ID"]
    assert (state["1"], state["2"]) == ("0j", "0j")
    for key in ("0", "3"):
        assert state[key].startswith("(0.70710678") and state[key].endswith("+0j)")
    merged = run.outputs["execution-options.json"].json()
    assert merged["executorPlugin"] == ["circuit-loader@v0-1-0", plugin.identifier]
    assert (merged["shots"], merged["statevector"]) == (10, True)


def check_no_circuit_fails_clearly(corral_harness: Harness, plugin: Plugin) -> None:
    """A text that is no circuit fails the task, saying so."""
    run = corral_harness(plugin).run({"circuit": data_url("hello")})
    assert run.status == "FAILURE"
    assert (run.error or "").startswith("Not a valid OpenQASM circuit")

from collections.abc import Callable

from corral_plugin.testing import PluginHarness
from plugin import plugin


def test_every_input_becomes_output(corral_harness: Callable[..., PluginHarness]) -> None:
    run = corral_harness(plugin).run({"inputStr": "my input, your input"})
    assert run.status == "SUCCESS", run.error
    assert run.log == ["result: 'my output, your output'"]
    out = run.outputs["out.txt"]
    assert (out.text, out.data_type, out.content_type) == (
        "my output, your output",
        "custom/hello-world-output",
        "text/plain",
    )

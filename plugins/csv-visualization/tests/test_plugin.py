from collections.abc import Callable

from corral_plugin.testing import PluginHarness
from plugin import plugin


def test_a_table_of_the_rows_with_cells_escaped(
    corral_harness: Callable[..., PluginHarness],
) -> None:
    harness = corral_harness(plugin)
    run = harness.run({"data": "data:text/csv,name,score%0A<b>Ada</b>,3"})
    assert run.status == "SUCCESS", run.error
    page = run.outputs["table.html"]
    assert page.content_type == "text/html"
    assert "<th>name</th><th>score</th>" in page.text
    assert "<td>&lt;b&gt;Ada&lt;/b&gt;</td><td>3</td>" in page.text


def test_the_page_shows_the_table_and_a_bad_url_is_a_clear_failure(
    corral_harness: Callable[..., PluginHarness],
) -> None:
    harness = corral_harness(plugin)
    assert "<td>1</td>" in harness.render({"data": "data:text/csv,a%0A1"})
    run = harness.run({"data": "ftp://example.invalid/x.csv"})
    assert run.status == "FAILURE"
    assert run.error == "unsupported data URL scheme 'ftp' in 'ftp://example.invalid/x.csv'"

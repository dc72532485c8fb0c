"""csv-visualization v0.1.0: shows CSV data as a table."""

import csv
import html
import io

from corral_plugin import Context, DataOutput, Plugin, TaskError, fields, read_data

MAX_DATA = 64 * 1024 * 1024
MAX_ROWS = 10_000

plugin = Plugin(
    "csv-visualization",
    "v0.1.0",
    title="CSV visualization",
    description="Shows CSV data as a table.",
    type="visualization",
    tags=["visualization", "csv"],
    inputs=[fields.data("data", "CSV data", "*", ["text/csv"], required=True)],
    data_outputs=[DataOutput("custom/visualization", ["text/html"], name="table.html")],
)


def table(url: str) -> str:
    """The data at ``url`` as an HTML table (at most ``MAX_ROWS`` rows)."""
    text = read_data(url, max_bytes=MAX_DATA).text
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise TaskError(f"the data is not valid CSV: {error}") from error
    if not rows:
        return '<table class="csv-table"></table>'
    out = ['<table class="csv-table"><thead><tr>']
    out += [f"<th>{html.escape(cell)}</th>" for cell in rows[0]]
    out.append("</tr></thead><tbody>")
    for row in rows[1 : MAX_ROWS + 1]:
        out.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) - 1 > MAX_ROWS:
        out.append(f"<p>{len(rows) - 1 - MAX_ROWS} more rows not shown.</p>")
    return "".join(out)


@plugin.task
def run(ctx: Context, inputs: dict[str, str]) -> None:
    page = table(inputs["data"])
    ctx.output("table.html", page, data_type="custom/visualization", content_type="text/html")


@plugin.render
def render(values: dict[str, str]) -> str:
    if not values.get("data"):
        raise TaskError("missing input `data`")
    return table(values["data"])


if __name__ == "__main__":
    plugin.run()

"""A plugin for the process-level tests: its task runs until it is cancelled,
then writes the file named by its ``marker`` input."""

import time
from pathlib import Path

from corral_plugin import Context, Plugin, fields

plugin = Plugin("sleepy", "v1.0.0", inputs=[fields.text("marker", required=True)])


@plugin.task
def run(ctx: Context, inputs: dict[str, str]) -> None:
    ctx.log("started")
    while not ctx.cancelled:
        time.sleep(0.01)
    Path(inputs["marker"]).write_text("cancelled")


if __name__ == "__main__":
    plugin.run()

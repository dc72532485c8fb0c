"""hello-world-python v0.2.1: hello-world on the Python SDK (replaces every
`input` in `inputStr` with `output`), to compare with the Rust one."""

from corral_plugin import Context, DataOutput, Plugin, fields

plugin = Plugin(
    "hello-world-python",
    "v0.2.1",
    title="Hello World (Python)",
    description="Tests the plugin system: replaces every `input` in the text with `output`.",
    tags=["hello-world", "demo"],
    inputs=[
        fields.text(
            "inputStr",
            "Input String",
            required=True,
            help="A text in which every `input` becomes `output`.",
        )
    ],
    data_outputs=[DataOutput("custom/hello-world-output", ["text/plain"], name="out.txt")],
)


@plugin.task
def run(ctx: Context, inputs: dict[str, str]) -> None:
    text = inputs["inputStr"].replace("input", "output")
    ctx.log(f"result: '{text}'")
    ctx.output("out.txt", text, data_type="custom/hello-world-output", content_type="text/plain")


if __name__ == "__main__":
    plugin.run()

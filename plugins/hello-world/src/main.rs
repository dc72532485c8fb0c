//! hello-world v0.2.1: replaces every `input` in `inputStr` with `output`.

use corral_sdk::{DataOutput, Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Task};

struct HelloWorld;

impl Plugin for HelloWorld {
    type State = ();

    fn metadata(&self) -> Metadata {
        Metadata::new("hello-world", "v0.2.1", PluginType::Processing)
            .title("Hello World")
            .description(
                "Tests the plugin system: replaces every `input` in the text with `output`.",
            )
            .tags(["hello-world", "demo"])
            .input(
                Field::text("inputStr", "Input String")
                    .help("A text in which every `input` becomes `output`.")
                    .required(),
            )
            .data_output(
                DataOutput::new("custom/hello-world-output", ["text/plain"])
                    .name("out.txt")
                    .required(),
            )
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
        let text = inputs.require("inputStr")?.replace("input", "output");
        task.log(format!("result: '{text}'")).await?;
        task.output_bytes("out.txt", "custom/hello-world-output", "text/plain", text)
            .await?;
        Ok(Next::Done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(HelloWorld).await
}

//! hello-world-multi-step v0.2.1: a task that stops halfway for a step's input.

use corral_sdk::{DataOutput, Error, Field, Inputs, Metadata, Plugin, PluginType, Task};

const OUTPUT_TYPE: &str = "custom/hello-world-output";

struct HelloWorldMultiStep;

impl Plugin for HelloWorldMultiStep {
    fn metadata(&self) -> Metadata {
        Metadata::new("hello-world-multi-step", "v0.2.1", PluginType::Processing)
            .title("Hello World (multi-step)")
            .description("Tests the plugin system with a task of two steps.")
            .tags(["hello-world", "demo", "multistep"])
            .input(Field::text("inputStr", "Input String").required())
            .data_output(
                DataOutput::new(OUTPUT_TYPE, ["text/plain"])
                    .name("output1.txt")
                    .required(),
            )
            .data_output(
                DataOutput::new(OUTPUT_TYPE, ["text/plain"])
                    .name("output2.txt")
                    .required(),
            )
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<(), Error> {
        let first = inputs.require("inputStr")?.to_owned();
        task.progress(50, 100, "%").await?;
        let prefill = format!("Input from preprocessing: {first}");
        let step = task
            .step(
                "demo-step",
                vec![
                    Field::text("inputStr", "Input String")
                        .required()
                        .default_value(prefill),
                ],
            )
            .await?;
        let second = step.require("inputStr")?;
        task.progress(100, 100, "%").await?;
        let preprocessed = format!("Processed in the preprocessing step: {first}");
        task.output_bytes("output1.txt", OUTPUT_TYPE, "text/plain", preprocessed)
            .await?;
        let processed = format!("Processed in the processing step: {first} {second}");
        task.output_bytes("output2.txt", OUTPUT_TYPE, "text/plain", processed)
            .await
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(HelloWorldMultiStep).await
}

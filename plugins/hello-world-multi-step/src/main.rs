//! hello-world-multi-step v0.2.1: a task that stops halfway for a step's input.
//! The first call ends with the step; the step's submission continues the task
//! from its state, in whichever process of the plugin runs then.

use corral_sdk::{
    DataOutput, Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Step, Task,
};
use serde::{Deserialize, Serialize};

const OUTPUT_TYPE: &str = "custom/hello-world-output";

struct HelloWorldMultiStep;

/// What the task keeps while it waits for `demo-step`.
#[derive(Serialize, Deserialize)]
struct State {
    first: String,
}

impl Plugin for HelloWorldMultiStep {
    type State = State;

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

    async fn invoke(&self, task: Task<State>, inputs: Inputs) -> Result<Next<State>, Error> {
        let first = inputs.require("inputStr")?.to_owned();
        task.progress(50, 100, "%").await?;
        let prefill = format!("Input from preprocessing: {first}");
        let form = vec![
            Field::text("inputStr", "Input String")
                .required()
                .default_value(prefill),
        ];
        Ok(Next::step("demo-step", form, State { first }))
    }

    async fn step(&self, task: Task<State>, step: Step<State>) -> Result<Next<State>, Error> {
        let first = step.state.first;
        let second = step.inputs.require("inputStr")?;
        task.progress(100, 100, "%").await?;
        let preprocessed = format!("Processed in the preprocessing step: {first}");
        task.output_bytes("output1.txt", OUTPUT_TYPE, "text/plain", preprocessed)
            .await?;
        let processed = format!("Processed in the processing step: {first} {second}");
        task.output_bytes("output2.txt", OUTPUT_TYPE, "text/plain", processed)
            .await?;
        Ok(Next::Done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(HelloWorldMultiStep).await
}

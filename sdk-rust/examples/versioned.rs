//! A plugin whose name and version come from the environment (`PLUGIN_NAME`,
//! `PLUGIN_VERSION`): for running several versions side by side, and as a test
//! fixture. It echoes its `text` input into its log; with `gate` (a URL) it first
//! reads that URL, so a test decides when it goes on; with `step` it then waits
//! for a step `confirm`.

use corral_sdk::{Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Step, Task};

struct Versioned {
    name: String,
    version: String,
}

impl Plugin for Versioned {
    type State = ();

    fn metadata(&self) -> Metadata {
        Metadata::new(&self.name, &self.version, PluginType::Processing)
            .title("Versioned echo")
            .input(Field::text("text", "Text"))
            .input(Field::text("gate", "URL to read before going on"))
            .input(Field::boolean("step", "Wait for a step"))
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
        if let Some(gate) = inputs.get("gate") {
            task.read_data(gate).await?;
        }
        if inputs.get("step") == Some("true") {
            let form = vec![Field::text("answer", "Answer").required()];
            return Ok(Next::step("confirm", form, ()));
        }
        self.echo(&task).await?;
        Ok(Next::Done)
    }

    async fn step(&self, task: Task, step: Step<()>) -> Result<Next<()>, Error> {
        let answer = step.inputs.get("answer").unwrap_or("");
        task.log(format!("confirmed: {answer}")).await?;
        self.echo(&task).await?;
        Ok(Next::Done)
    }
}

impl Versioned {
    async fn echo(&self, task: &Task) -> Result<(), Error> {
        let text = task.inputs().get("text").unwrap_or("");
        task.log(format!("{} says: {text}", self.version)).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let name = std::env::var("PLUGIN_NAME").unwrap_or_else(|_| "versioned".into());
    let version = std::env::var("PLUGIN_VERSION").unwrap_or_else(|_| "v1.0.0".into());
    corral_sdk::serve(Versioned { name, version }).await
}

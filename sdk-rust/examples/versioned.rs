//! A plugin whose name and version come from the environment (`PLUGIN_NAME`,
//! `PLUGIN_VERSION`): for running several versions side by side, and as a test
//! fixture. It echoes its `text` input into its log; with `gate` (a URL) it first
//! reads that URL, so a test decides when it goes on; with `step` it then waits
//! for a step `confirm`. With `parts` it works through that many parts instead:
//! each writes an output `part-N.txt`, reads `gate`, then saves a checkpoint, so
//! a run that crashed continues from the last one.

use corral_sdk::{Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Step, Task};

struct Versioned {
    name: String,
    version: String,
}

impl Plugin for Versioned {
    /// The parts done (with `parts`).
    type State = u32;

    fn metadata(&self) -> Metadata {
        Metadata::new(&self.name, &self.version, PluginType::Processing)
            .title("Versioned echo")
            .input(Field::text("text", "Text"))
            .input(Field::text("gate", "URL to read before going on"))
            .input(Field::boolean("step", "Wait for a step"))
            .input(Field::integer(
                "parts",
                "Parts to work through, one checkpoint each",
            ))
    }

    async fn invoke(&self, task: Task<u32>, inputs: Inputs) -> Result<Next<u32>, Error> {
        if let Some(parts) = inputs.get("parts") {
            let parts = parts
                .parse()
                .map_err(|_| Error::task("`parts` is not a number"))?;
            return self.parts(&task, parts, inputs.get("gate")).await;
        }
        if let Some(gate) = inputs.get("gate") {
            task.read_data(gate).await?;
        }
        if inputs.get("step") == Some("true") {
            let form = vec![Field::text("answer", "Answer").required()];
            return Ok(Next::step("confirm", form, 0));
        }
        self.echo(&task).await?;
        Ok(Next::Done)
    }

    async fn step(&self, task: Task<u32>, step: Step<u32>) -> Result<Next<u32>, Error> {
        let answer = step.inputs.get("answer").unwrap_or("");
        task.log(format!("confirmed: {answer}")).await?;
        self.echo(&task).await?;
        Ok(Next::Done)
    }
}

impl Versioned {
    /// Parts from the last checkpoint on: the gate, then the checkpoint, then
    /// a log line (written once the checkpoint is stored).
    async fn parts(
        &self,
        task: &Task<u32>,
        parts: u32,
        gate: Option<&str>,
    ) -> Result<Next<u32>, Error> {
        let from = task.restored().copied().unwrap_or(0);
        if from > 0 {
            task.log(format!(
                "continuing from checkpoint {from} (attempt {})",
                task.attempt()
            ))
            .await?;
        }
        for part in from..parts {
            let text = format!("part {part} (attempt {})", task.attempt());
            task.output_bytes(
                &format!("part-{part}.txt"),
                "text/plain",
                "text/plain",
                text,
            )
            .await?;
            if let Some(gate) = gate {
                task.read_data(gate).await?;
            }
            task.checkpoint(&(part + 1)).await?;
            task.log(format!("part {part} done")).await?;
        }
        Ok(Next::Done)
    }

    async fn echo(&self, task: &Task<u32>) -> Result<(), Error> {
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

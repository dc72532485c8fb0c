//! A plugin whose name and version come from the environment (`PLUGIN_NAME`,
//! `PLUGIN_VERSION`): for running several versions side by side. It echoes its
//! `text` input into its log.

use corral_sdk::{Error, Field, Inputs, Metadata, Plugin, PluginType, Task};

struct Versioned {
    name: String,
    version: String,
}

impl Plugin for Versioned {
    fn metadata(&self) -> Metadata {
        Metadata::new(&self.name, &self.version, PluginType::Processing)
            .title("Versioned echo")
            .input(Field::text("text", "Text"))
    }

    async fn invoke(&self, task: Task, inputs: Inputs) -> Result<(), Error> {
        task.log(format!(
            "{} says: {}",
            self.version,
            inputs.get("text").unwrap_or("")
        ))
        .await
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let name = std::env::var("PLUGIN_NAME").unwrap_or_else(|_| "versioned".into());
    let version = std::env::var("PLUGIN_VERSION").unwrap_or_else(|_| "v1.0.0".into());
    corral_sdk::serve(Versioned { name, version }).await
}

//! Write a Corral plugin in Rust.
//!
//! Implement [`Plugin`] and call [`serve`]: the SDK starts the gRPC server
//! (`corral.plugin.v1.Plugin`, health, reflection) on loopback, registers with
//! the supervisor that spawned the process, streams the task's events, and
//! shuts down gracefully on SIGTERM. A complete plugin:
//!
//! ```no_run
//! use corral_sdk::{DataOutput, Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Task};
//!
//! struct HelloWorld;
//!
//! impl Plugin for HelloWorld {
//!     type State = ();
//!
//!     fn metadata(&self) -> Metadata {
//!         Metadata::new("hello-world", "v0.2.1", PluginType::Processing)
//!             .title("Hello World")
//!             .description("Replaces every `input` with `output`.")
//!             .tags(["hello-world", "demo"])
//!             .input(Field::text("inputStr", "Input string").required())
//!             .data_output(
//!                 DataOutput::new("custom/hello-world-output", ["text/plain"])
//!                     .name("out.txt")
//!                     .required(),
//!             )
//!     }
//!
//!     async fn invoke(&self, task: Task, inputs: Inputs) -> Result<Next<()>, Error> {
//!         let text = inputs.require("inputStr")?.replace("input", "output");
//!         task.log(format!("result: '{text}'")).await?;
//!         task.output_bytes("out.txt", "custom/hello-world-output", "text/plain", text)
//!             .await?;
//!         Ok(Next::Done)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     corral_sdk::serve(HelloWorld).await
//! }
//! ```
//!
//! A task that asks a person for input returns [`Next::step`] with a typed
//! state (any serde type); [`Plugin::step`] continues it when the step's form
//! is submitted, in any process of the plugin: `plugins/hello-world-multi-step`
//! is one, `plugins/manual-classification` loops over many steps. A long
//! call can save [`Task::checkpoint`]s to continue from should it crash.
//!
//! The environment the supervisor passes, and what any plugin must serve, is
//! described in `docs/plugin-protocol.md`.

mod data;
mod error;
mod metadata;
mod server;
mod task;

pub use corral_proto::plugin::v1 as proto;
pub use data::read_data;
pub use error::Error;
pub use metadata::{DataInput, DataOutput, Field, Metadata, PluginType};
pub use server::{Plugin, serve};
pub use task::{Inputs, Next, Output, Step, StepRequest, Task};

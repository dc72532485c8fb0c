//! The supervisor: spawns each plugin as its own process, accepts its
//! registration, checks its health, restarts it when it dies, stops it cleanly,
//! keeps its logs, and serves the registry and admin gRPC APIs.
//!
//! - [`manifest`]: `plugin.toml`, found in the plugin folders.
//! - [`admin_token`]: the Admin API's token, from the environment or a file.
//! - [`confine`]: each plugin's Landlock confinement (`corral confine`).
//! - `lifecycle`: the task that owns one plugin (see `lifecycle.md`).
//! - `spawn`: the one audited place that creates and signals processes.
//! - `proxy`: plugin calls from gateways on other machines, forwarded.
//! - [`Supervisor`]: the set of plugin tasks; [`RunningSupervisor`]: its gRPC server.

pub mod admin_token;
mod backoff;
pub mod confine;
mod convert;
pub mod environment;
mod error;
mod lifecycle;
mod logs;
pub mod manifest;
mod proxy;
mod server;
mod service;
mod spawn;
mod state;
mod supervisor;

pub use error::SupervisorError;
pub use logs::{LogLine, LogStream};
pub use server::{RunningSupervisor, ServeError, Shutdown, SupervisorConfig};
pub use service::SupervisorService;
pub use state::{PluginSnapshot, PluginState, identifier};
pub use supervisor::Supervisor;

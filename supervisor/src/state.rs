//! The supervisor's view of a plugin, as published to the admin API and watchers.

use std::{path::PathBuf, sync::Arc, time::Duration};

use corral_proto::plugin::v1::PluginMetadata;
use tokio::time::Instant;

/// Where a plugin is in its life; see `lifecycle.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// Not running, and not started until an operator says so.
    Stopped,
    /// Spawned, waiting for registration and a healthy check.
    Starting,
    /// Registered and healthy.
    Ready,
    /// Ended or unhealthy; waiting before the next start.
    Backoff,
    /// SIGTERM sent; waiting for the process group to end.
    Stopping,
    /// Stays down until an operator starts it (crash loop, bad manifest, refused
    /// registration).
    Failed,
    /// Ended by itself and not restarted, as its restart policy says.
    Exited,
}

impl PluginState {
    /// True when no process of the plugin runs and none will start by itself.
    pub fn is_down(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed | Self::Exited)
    }
}

/// A plugin's state at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSnapshot {
    /// The plugin folder's name.
    pub name: String,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// See [`PluginState`].
    pub state: PluginState,
    /// The running process, if any.
    pub pid: Option<u32>,
    /// The registered gRPC endpoint (`http://host:port`).
    pub endpoint: Option<String>,
    /// Starts after the first one.
    pub restarts: u32,
    /// Why the last process ended.
    pub last_exit_reason: Option<String>,
    /// When the current process became ready.
    pub ready_since: Option<Instant>,
    /// The QHAna identifier, e.g. `hello-world@v0-2-1`.
    pub identifier: Option<String>,
    /// The registered metadata.
    pub metadata: Option<Arc<PluginMetadata>>,
    /// Why the plugin is failed.
    pub error: Option<String>,
    /// From the manifest: tasks may be run again after a crash.
    pub retry_safe: bool,
}

impl PluginSnapshot {
    /// How long the plugin has been ready, zero when it is not.
    pub fn uptime(&self) -> Duration {
        self.ready_since
            .map(|since| since.elapsed())
            .unwrap_or_default()
    }
}

/// The QHAna identifier of a plugin: `.` becomes `-` in the name and version,
/// joined by `@`: `hello-world` + `v0.2.1` = `hello-world@v0-2-1`.
pub fn identifier(name: &str, version: &str) -> String {
    format!("{}@{}", name.replace('.', "-"), version.replace('.', "-"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifier_replaces_dots() {
        assert_eq!(
            super::identifier("hello-world", "v0.2.1"),
            "hello-world@v0-2-1"
        );
        assert_eq!(super::identifier("a.b", "1.0.0"), "a-b@1-0-0");
    }
}

//! The boundary between the supervisor's types and the generated protobuf types.

use std::time::UNIX_EPOCH;

use corral_proto::supervisor::v1 as pb;

use crate::{
    logs::LogLine,
    state::{PluginSnapshot, PluginState},
};

pub(crate) fn state(state: PluginState) -> pb::PluginState {
    match state {
        PluginState::Stopped => pb::PluginState::Stopped,
        PluginState::Starting => pb::PluginState::Starting,
        PluginState::Ready => pb::PluginState::Ready,
        PluginState::Backoff => pb::PluginState::Backoff,
        PluginState::Stopping => pb::PluginState::Stopping,
        PluginState::Failed => pb::PluginState::Failed,
        PluginState::Exited => pb::PluginState::Exited,
    }
}

/// A plugin's status; `draining` is its host's.
pub(crate) fn status(snapshot: &PluginSnapshot, draining: bool) -> pb::PluginStatus {
    pb::PluginStatus {
        plugin: snapshot.name.clone(),
        state: state(snapshot.state).into(),
        pid: snapshot.pid.unwrap_or_default(),
        endpoint: snapshot.endpoint.clone().unwrap_or_default(),
        restarts: snapshot.restarts,
        last_exit_reason: snapshot.last_exit_reason.clone().unwrap_or_default(),
        uptime_ms: u64::try_from(snapshot.uptime().as_millis()).unwrap_or(u64::MAX),
        metadata: snapshot.metadata.as_deref().cloned(),
        identifier: snapshot.identifier.clone().unwrap_or_default(),
        manifest: snapshot.manifest_path.display().to_string(),
        error: snapshot.error.clone().unwrap_or_default(),
        retry_safe: snapshot.retry_safe,
        draining,
    }
}

pub(crate) fn log_line(plugin: &str, line: &LogLine) -> pb::PluginLogLine {
    pb::PluginLogLine {
        plugin: plugin.to_owned(),
        stream: line.stream.as_str().to_owned(),
        text: line.text.to_string(),
        timestamp_ms: line
            .at
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default(),
        pid: line.pid,
    }
}

//! Plugin lifecycle: operator start → registered and healthy, and SIGKILL →
//! healthy again with a backoff of 0, timed on the supervisor's watch stream.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use corral_proto::{
    admin::AdminApi,
    supervisor::v1::{PluginRef, PluginState, PluginStatus, WatchPluginsRequest},
};
use tonic::Streaming;

use crate::{procs::Supervisor, stats::Latencies};

const LIMIT: Duration = Duration::from_secs(30);

pub struct Lifecycle {
    pub start: Latencies,
    pub kill: Latencies,
}

/// `runs` of each for `plugin` of `supervisor`.
pub async fn measure(supervisor: &Supervisor, plugin: &str, runs: usize) -> Result<Lifecycle> {
    let mut admin = supervisor.admin().await?;
    let mut result = Lifecycle {
        start: Latencies::default(),
        kill: Latencies::default(),
    };
    for _ in 0..runs {
        result.start.push(start_to_ready(&mut admin, plugin).await?);
        result.kill.push(kill_to_ready(&mut admin, plugin).await?);
    }
    Ok(result)
}

async fn watch(admin: &mut AdminApi) -> Result<Streaming<PluginStatus>> {
    Ok(admin
        .watch_plugins(WatchPluginsRequest {})
        .await?
        .into_inner())
}

/// Follows `watch` until `plugin` is ready with a pid other than `old_pid`.
async fn ready(
    watch: &mut Streaming<PluginStatus>,
    plugin: &str,
    old_pid: u32,
) -> Result<PluginStatus> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, watch.message()).await {
            Ok(Ok(Some(status)))
                if status.plugin == plugin
                    && status.state == PluginState::Ready as i32
                    && status.pid != old_pid =>
            {
                return Ok(status);
            }
            Ok(Ok(Some(_))) => {}
            _ => bail!("{plugin} did not get ready within {LIMIT:?}"),
        }
    }
}

async fn start_to_ready(admin: &mut AdminApi, plugin: &str) -> Result<Duration> {
    let reference = || PluginRef {
        plugin: plugin.into(),
    };
    admin.stop_plugin(reference()).await?;
    let mut watch = watch(admin).await?;
    let started = Instant::now();
    admin.start_plugin(reference()).await?;
    ready(&mut watch, plugin, 0).await?;
    Ok(started.elapsed())
}

async fn kill_to_ready(admin: &mut AdminApi, plugin: &str) -> Result<Duration> {
    let mut watch = watch(admin).await?;
    let before = ready(&mut watch, plugin, 0).await?;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    ready(&mut watch, plugin, before.pid).await?;
    Ok(started.elapsed())
}

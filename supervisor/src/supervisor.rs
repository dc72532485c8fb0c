//! The set of plugins: one task each, found at start in the plugin folders.

use std::{path::PathBuf, sync::Arc};

use tokio::{
    sync::{broadcast, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    error::SupervisorError,
    lifecycle::{Command, PluginChannels, PluginTask, RegisterRequest, Shared},
    logs::LogLine,
    manifest,
    state::PluginSnapshot,
};

/// How many state changes a slow watcher may fall behind before it is sent the
/// whole list again.
const WATCH_BACKLOG: usize = 1024;

/// A handle to the running plugins. Cheap to share behind an `Arc`.
pub struct Supervisor {
    plugins: Vec<PluginChannels>,
    names: Vec<String>,
    shared: Arc<Shared>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Set while the host is drained: gateways send it no new task.
    draining: std::sync::atomic::AtomicBool,
    /// Plugin calls running through the proxy.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Supervisor {
    /// Finds the plugins in `plugin_folders` and starts each one's task (and
    /// process, when its manifest is valid). Plugins will register at `registry`.
    /// A manifest with an error is logged with its file and field, and its
    /// plugin is listed as failed; the others start.
    pub fn start(
        plugin_folders: &[PathBuf],
        registry: String,
        plugin_host: Option<String>,
        confined_in: Option<PathBuf>,
        plugin_user: Option<crate::confine::PluginUser>,
    ) -> std::io::Result<Self> {
        let discovered = manifest::discover(plugin_folders)?;
        let shared = Arc::new(Shared {
            registry,
            plugin_host,
            claims: Default::default(),
            changes: broadcast::channel(WATCH_BACKLOG).0,
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
            confined_in,
            plugin_user,
        });
        let mut tasks = JoinSet::new();
        let mut plugins = Vec::with_capacity(discovered.len());
        let mut names = Vec::with_capacity(discovered.len());
        for (index, found) in discovered.into_iter().enumerate() {
            let manifest = found.manifest.map_err(|error| {
                tracing::error!(plugin = %found.name, %error, "plugin not started");
                error.to_string()
            });
            let (task, channels) = PluginTask::new(
                found.name.clone(),
                index,
                found.folder,
                manifest,
                shared.clone(),
            );
            tasks.spawn(task.run());
            plugins.push(channels);
            names.push(found.name);
        }
        tracing::info!(plugins = plugins.len(), "supervisor started");
        Ok(Self {
            plugins,
            names,
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
            draining: Default::default(),
            in_flight: Default::default(),
        })
    }

    /// Drains the host (or ends the drain); every plugin's state is published
    /// again so that watchers see it.
    pub fn set_draining(&self, draining: bool) {
        use std::sync::atomic::Ordering;
        if self.draining.swap(draining, Ordering::SeqCst) != draining {
            tracing::info!(draining, "host drain changed");
            for snapshot in self.list() {
                let _no_watchers_is_fine = self.shared.changes.send(snapshot);
            }
        }
    }

    /// Whether the host is drained.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The counter of plugin calls running through the proxy.
    pub(crate) fn in_flight(&self) -> &Arc<std::sync::atomic::AtomicUsize> {
        &self.in_flight
    }

    /// The endpoint of the ready plugin in folder `plugin`.
    pub(crate) fn ready_endpoint(&self, plugin: &str) -> Option<String> {
        let index = self.names.iter().position(|name| name == plugin)?;
        let status = self.plugins[index].status.borrow();
        (status.state == crate::state::PluginState::Ready)
            .then(|| status.endpoint.clone())
            .flatten()
    }

    /// Every plugin's current state, in discovery order.
    pub fn list(&self) -> Vec<PluginSnapshot> {
        self.plugins
            .iter()
            .map(|plugin| plugin.status.borrow().clone())
            .collect()
    }

    /// The state of one plugin, by folder name or identifier.
    pub fn get(&self, plugin: &str) -> Result<PluginSnapshot, SupervisorError> {
        Ok(self.find(plugin)?.status.borrow().clone())
    }

    /// Starts a stopped or failed plugin; returns once its process is spawned.
    pub async fn start_plugin(&self, plugin: &str) -> Result<PluginSnapshot, SupervisorError> {
        let channels = self.find(plugin)?;
        self.ask(channels, Command::Start).await?;
        Ok(channels.status.borrow().clone())
    }

    /// Stops a plugin; returns once its process is gone.
    pub async fn stop_plugin(&self, plugin: &str) -> Result<PluginSnapshot, SupervisorError> {
        let channels = self.find(plugin)?;
        self.ask(channels, Command::Stop).await?;
        Ok(channels.status.borrow().clone())
    }

    /// Stops a plugin if it runs and starts it again (re-reading its manifest);
    /// returns once the new process is spawned.
    pub async fn restart_plugin(&self, plugin: &str) -> Result<PluginSnapshot, SupervisorError> {
        let channels = self.find(plugin)?;
        self.ask(channels, Command::Restart).await?;
        Ok(channels.status.borrow().clone())
    }

    /// The last `tail` lines of a plugin's output and a receiver of new ones.
    pub fn logs(
        &self,
        plugin: &str,
        tail: usize,
    ) -> Result<(Vec<LogLine>, broadcast::Receiver<LogLine>), SupervisorError> {
        Ok(self.find(plugin)?.logs.snapshot_and_follow(tail))
    }

    /// A receiver of every state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PluginSnapshot> {
        self.shared.changes.subscribe()
    }

    /// Hands a registration to the plugin whose spawn issued the token.
    pub(crate) async fn register(
        &self,
        registration: RegisterRequest,
    ) -> Result<(String, String), SupervisorError> {
        let index: usize = registration
            .token
            .split_once('.')
            .and_then(|(index, _)| index.parse().ok())
            .ok_or(SupervisorError::BadToken)?;
        let channels = self.plugins.get(index).ok_or(SupervisorError::BadToken)?;
        let (reply, answer) = oneshot::channel();
        channels
            .commands
            .send(Command::Register {
                registration: Box::new(registration),
                reply,
            })
            .await
            .map_err(|_| SupervisorError::ShuttingDown)?;
        let identifier = answer.await.map_err(|_| SupervisorError::ShuttingDown)??;
        Ok((self.names[index].clone(), identifier))
    }

    /// Stops every plugin (SIGTERM, grace, SIGKILL) and waits for their tasks.
    /// Calling it again skips the grace periods.
    pub async fn shutdown(&self) {
        if self.shared.shutdown.is_cancelled() {
            self.shared.force.cancel();
            return;
        }
        self.shared.shutdown.cancel();
        let mut tasks = self.tasks.lock().await;
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "plugin task ended abnormally");
            }
        }
    }

    /// Kills every plugin at once; for a second Ctrl-C during shutdown.
    pub fn force_shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.force.cancel();
    }

    fn find(&self, plugin: &str) -> Result<&PluginChannels, SupervisorError> {
        if let Some(index) = self.names.iter().position(|name| name == plugin) {
            return Ok(&self.plugins[index]);
        }
        self.plugins
            .iter()
            .find(|channels| channels.status.borrow().identifier.as_deref() == Some(plugin))
            .ok_or_else(|| SupervisorError::UnknownPlugin(plugin.to_owned()))
    }

    async fn ask(
        &self,
        channels: &PluginChannels,
        command: fn(oneshot::Sender<Result<(), SupervisorError>>) -> Command,
    ) -> Result<(), SupervisorError> {
        let (reply, answer) = oneshot::channel();
        channels
            .commands
            .send(command(reply))
            .await
            .map_err(|_| SupervisorError::ShuttingDown)?;
        answer.await.map_err(|_| SupervisorError::ShuttingDown)?
    }
}

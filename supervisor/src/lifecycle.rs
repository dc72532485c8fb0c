//! One task per plugin owns its process and its state; see `lifecycle.md`.
//!
//! Everything else talks to it through [`Command`]s; its own helpers (the process
//! waiter, health probes) report back as [`Event`]s tagged with the generation of
//! the process they watch, so a late report about an old process is ignored.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_proto::plugin::v1::PluginMetadata;
use nix::sys::signal::Signal;
use subtle::ConstantTimeEq;
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::AbortHandle,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;

use crate::{
    backoff::{RestartDecision, RestartTracker},
    confine::{Confinement, PluginUser},
    environment::{self, EnvironmentKind, Prepared},
    error::SupervisorError,
    logs::{self, LogBuffer, LogStream},
    manifest::{MANIFEST_FILE, Manifest, RestartPolicy},
    spawn::{self, SpawnSpec},
    state::{self, PluginSnapshot, PluginState},
};

/// How often a starting plugin's health is probed until it answers SERVING.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Requests to a plugin's task.
#[derive(Debug)]
pub(crate) enum Command {
    Start(oneshot::Sender<Result<(), SupervisorError>>),
    Stop(oneshot::Sender<Result<(), SupervisorError>>),
    Restart(oneshot::Sender<Result<(), SupervisorError>>),
    Register {
        registration: Box<RegisterRequest>,
        reply: oneshot::Sender<Result<String, SupervisorError>>,
    },
}

/// A plugin's registration, checked for form by the gRPC layer.
#[derive(Debug)]
pub(crate) struct RegisterRequest {
    pub(crate) token: String,
    pub(crate) endpoint: String,
    pub(crate) metadata: PluginMetadata,
}

/// Reports from the helpers of one process.
#[derive(Debug)]
enum Event {
    Exited {
        generation: u64,
        reason: String,
        success: bool,
    },
    Healthy {
        generation: u64,
    },
    Unhealthy {
        generation: u64,
    },
    /// The environment build for this start ended.
    Prepared {
        generation: u64,
        result: Result<(), String>,
    },
}

/// What the supervisor shares with every plugin task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The registry address given to plugins.
    pub(crate) registry: String,
    /// The host name other machines reach plugins by (plugins then listen on
    /// every interface); `None`: loopback only.
    pub(crate) plugin_host: Option<String>,
    /// Identifier → plugin folder name, for the plugins that registered.
    pub(crate) claims: Mutex<std::collections::HashMap<String, String>>,
    /// Every published snapshot, for the watch stream.
    pub(crate) changes: broadcast::Sender<PluginSnapshot>,
    /// First shutdown signal: stop plugins gracefully.
    pub(crate) shutdown: CancellationToken,
    /// Second signal: skip the grace period.
    pub(crate) force: CancellationToken,
    /// Where each plugin's private temporary folder is made, when plugins are
    /// confined; `None`: they run unconfined.
    pub(crate) confined_in: Option<PathBuf>,
    /// The user plugins run as; `None`: the supervisor's.
    pub(crate) plugin_user: Option<PluginUser>,
}

/// A running process of the plugin.
#[derive(Debug)]
struct Process {
    pid: u32,
    generation: u64,
    /// Consumed by the first successful Register.
    token: Option<String>,
    registration: Option<Registration>,
    probe: Option<AbortHandle>,
}

#[derive(Debug)]
struct Registration {
    endpoint: String,
    identifier: String,
    metadata: Arc<PluginMetadata>,
    health: HealthClient<Channel>,
}

/// What to do once a stopping process is gone.
#[derive(Debug)]
enum AfterStop {
    /// Stay stopped (operator stop).
    Stay,
    /// Start again at once (operator restart).
    Restart,
    /// Treat as a crash with this reason (start timeout, failed health).
    Crashed(String),
    /// Mark failed with this error.
    Fail(String),
    /// The supervisor is shutting down: end the task.
    Shutdown,
}

#[derive(Debug)]
enum Phase {
    Stopped,
    /// Building the plugin's environment before its process is spawned.
    Preparing {
        generation: u64,
        build: AbortHandle,
    },
    Starting {
        process: Process,
        deadline: Instant,
    },
    Ready {
        process: Process,
        since: Instant,
        missed: u32,
        next_check: Instant,
    },
    Backoff {
        until: Instant,
    },
    Stopping {
        process: Process,
        kill_at: Option<Instant>,
        then: AfterStop,
        /// Operators waiting for the stop (or restart) to complete.
        waiters: Waiters,
    },
    Failed,
    Exited,
}

/// The task that owns one plugin.
pub(crate) struct PluginTask {
    name: String,
    index: usize,
    folder: PathBuf,
    manifest: Result<Manifest, String>,
    shared: Arc<Shared>,
    logs: Arc<LogBuffer>,
    status: watch::Sender<PluginSnapshot>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    event_inbox: mpsc::Receiver<Event>,
    tracker: RestartTracker,
    phase: Phase,
    generation: u64,
    started_once: bool,
    restarts: u32,
    last_exit_reason: Option<String>,
    error: Option<String>,
    /// Set once this task has acted on the supervisor's shutdown.
    shutdown_handled: bool,
}

/// Callers waiting for a stop (or restart) to complete.
type Waiters = Vec<oneshot::Sender<Result<(), SupervisorError>>>;

/// The ends of a plugin task that others hold.
pub(crate) struct PluginChannels {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) status: watch::Receiver<PluginSnapshot>,
    pub(crate) logs: Arc<LogBuffer>,
}

impl PluginTask {
    pub(crate) fn new(
        name: String,
        index: usize,
        folder: PathBuf,
        manifest: Result<Manifest, String>,
        shared: Arc<Shared>,
    ) -> (Self, PluginChannels) {
        let (restart, log_lines, retry_safe) = match &manifest {
            Ok(manifest) => (
                manifest.restart.clone(),
                manifest.log_lines,
                manifest.retry_safe,
            ),
            Err(_) => (Default::default(), 100, false),
        };
        let error = manifest.as_ref().err().cloned();
        let snapshot = PluginSnapshot {
            name: name.clone(),
            manifest_path: folder.join(MANIFEST_FILE),
            state: if error.is_some() {
                PluginState::Failed
            } else {
                PluginState::Stopped
            },
            pid: None,
            endpoint: None,
            restarts: 0,
            last_exit_reason: None,
            ready_since: None,
            identifier: None,
            metadata: None,
            error: error.clone(),
            retry_safe,
        };
        let (status, status_rx) = watch::channel(snapshot);
        let (command_tx, commands) = mpsc::channel(16);
        let (events, event_inbox) = mpsc::channel(16);
        let logs = Arc::new(LogBuffer::new(log_lines));
        let task = Self {
            name,
            index,
            folder,
            manifest,
            shared,
            logs: logs.clone(),
            status,
            commands,
            events,
            event_inbox,
            tracker: RestartTracker::new(restart),
            phase: if error.is_some() {
                Phase::Failed
            } else {
                Phase::Stopped
            },
            generation: 0,
            started_once: false,
            restarts: 0,
            last_exit_reason: None,
            error,
            shutdown_handled: false,
        };
        let channels = PluginChannels {
            commands: command_tx,
            status: status_rx,
            logs,
        };
        (task, channels)
    }

    /// Runs until the supervisor shuts down and the plugin's process is gone.
    pub(crate) async fn run(mut self) {
        if self.manifest.is_ok() {
            self.start_process();
            self.publish();
        }
        loop {
            let deadline = self.deadline();
            let shutdown_handled = self.shutdown_handled;
            tokio::select! {
                Some(command) = self.commands.recv() => self.on_command(command),
                Some(event) = self.event_inbox.recv() => {
                    if self.on_event(event) {
                        break;
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_deadline();
                }
                () = self.shared.shutdown.cancelled(), if !shutdown_handled => {
                    self.shutdown_handled = true;
                    if self.begin_shutdown() {
                        break;
                    }
                }
                () = self.shared.force.cancelled(), if matches!(self.phase, Phase::Stopping { kill_at: Some(_), .. }) => {
                    self.kill_now();
                }
            }
            self.publish();
        }
        self.publish();
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Starting { deadline, .. } => Some(*deadline),
            Phase::Ready { next_check, .. } => Some(*next_check),
            Phase::Backoff { until } => Some(*until),
            Phase::Stopping { kill_at, .. } => *kill_at,
            Phase::Stopped | Phase::Preparing { .. } | Phase::Failed | Phase::Exited => None,
        }
    }

    /// Handles a command. Commands that stop a process answer once it is gone
    /// (and, for a restart, once the new one is spawned); the state is published
    /// before any answer, so the caller reads the state its command produced.
    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start(reply) => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.set_after_stop(AfterStop::Restart);
                    self.wait_for_stop(reply);
                    return;
                }
                let result = self.operator_start();
                self.publish();
                let _ = reply.send(result);
            }
            Command::Restart(reply) => match &self.phase {
                Phase::Preparing { .. } => {
                    self.cancel_preparing();
                    let result = self.operator_start();
                    self.publish();
                    let _ = reply.send(result);
                }
                Phase::Starting { .. } | Phase::Ready { .. } => {
                    self.tracker.clear();
                    self.begin_stop(AfterStop::Restart);
                    self.wait_for_stop(reply);
                }
                Phase::Stopping { .. } => {
                    self.set_after_stop(AfterStop::Restart);
                    self.wait_for_stop(reply);
                }
                _ => {
                    let result = self.operator_start();
                    self.publish();
                    let _ = reply.send(result);
                }
            },
            Command::Stop(reply) => {
                match &self.phase {
                    Phase::Starting { .. } | Phase::Ready { .. } => {
                        self.begin_stop(AfterStop::Stay);
                    }
                    Phase::Stopping { .. } => self.set_after_stop(AfterStop::Stay),
                    Phase::Backoff { .. } | Phase::Exited => self.phase = Phase::Stopped,
                    Phase::Preparing { .. } => self.cancel_preparing(),
                    Phase::Stopped | Phase::Failed => {}
                }
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.wait_for_stop(reply);
                    return;
                }
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Command::Register {
                registration,
                reply,
            } => {
                let result = self.register(*registration);
                self.publish();
                let _ = reply.send(result);
            }
        }
    }

    /// Answers `reply` once the stopping process is gone.
    fn wait_for_stop(&mut self, reply: oneshot::Sender<Result<(), SupervisorError>>) {
        if let Phase::Stopping { waiters, .. } = &mut self.phase {
            waiters.push(reply);
        } else {
            let _ = reply.send(Ok(()));
        }
    }

    /// An operator's start: re-reads the manifest, forgets the crash history.
    fn operator_start(&mut self) -> Result<(), SupervisorError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(SupervisorError::ShuttingDown);
        }
        match &self.phase {
            Phase::Preparing { .. } | Phase::Starting { .. } | Phase::Ready { .. } => return Ok(()),
            Phase::Stopping { .. } => {
                self.set_after_stop(AfterStop::Restart);
                return Ok(());
            }
            Phase::Stopped | Phase::Failed | Phase::Exited | Phase::Backoff { .. } => {}
        }
        let manifest_path = self.folder.join(MANIFEST_FILE);
        match Manifest::load(&manifest_path) {
            Ok(manifest) => {
                self.tracker = RestartTracker::new(manifest.restart.clone());
                self.manifest = Ok(manifest);
            }
            Err(error) => {
                let reason = error.to_string();
                self.manifest = Err(reason.clone());
                self.error = Some(reason.clone());
                self.phase = Phase::Failed;
                return Err(SupervisorError::NotStartable {
                    plugin: self.name.clone(),
                    reason,
                });
            }
        }
        self.tracker.clear();
        self.error = None;
        self.start_process();
        Ok(())
    }

    /// Changes what follows the current stop; a shutdown or a failure stands.
    fn set_after_stop(&mut self, action: AfterStop) {
        if let Phase::Stopping { then, .. } = &mut self.phase
            && !matches!(then, AfterStop::Shutdown | AfterStop::Fail(_))
        {
            *then = action;
        }
    }

    fn register(&mut self, request: RegisterRequest) -> Result<String, SupervisorError> {
        let channel = Endpoint::from_shared(request.endpoint.clone())
            .map_err(|_| SupervisorError::InvalidAddress(request.endpoint.clone()))?
            .tcp_nodelay(true)
            .connect_lazy();
        let Phase::Starting { process, .. } = &mut self.phase else {
            return Err(SupervisorError::BadToken);
        };
        let token_matches = process.token.as_deref().is_some_and(|expected| {
            bool::from(expected.as_bytes().ct_eq(request.token.as_bytes()))
        });
        if !token_matches {
            return Err(SupervisorError::BadToken);
        }
        process.token = None;
        let metadata = request.metadata;
        if let Err(reason) = validate_metadata(&metadata) {
            let error = SupervisorError::InvalidMetadata(reason);
            self.begin_stop(AfterStop::Fail(error.to_string()));
            return Err(error);
        }
        let identifier = state::identifier(&metadata.name, &metadata.version);
        if let Err(holder) = self.claim(&identifier) {
            let error = SupervisorError::DuplicateIdentifier { identifier, holder };
            self.begin_stop(AfterStop::Fail(error.to_string()));
            return Err(error);
        }
        let Phase::Starting { process, .. } = &mut self.phase else {
            return Err(SupervisorError::BadToken);
        };
        tracing::info!(plugin = %self.name, %identifier, endpoint = %request.endpoint, "plugin registered");
        let health = HealthClient::new(channel);
        process.probe = Some(spawn_startup_probe(
            health.clone(),
            process.generation,
            self.events.clone(),
        ));
        process.registration = Some(Registration {
            endpoint: request.endpoint,
            identifier: identifier.clone(),
            metadata: Arc::new(metadata),
            health,
        });
        Ok(identifier)
    }

    fn claim(&self, identifier: &str) -> Result<(), String> {
        let mut claims = self
            .shared
            .claims
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match claims.get(identifier) {
            Some(holder) if *holder != self.name => Err(holder.clone()),
            _ => {
                claims.insert(identifier.to_owned(), self.name.clone());
                Ok(())
            }
        }
    }

    fn release_claim(&self, process: &Process) {
        let Some(registration) = &process.registration else {
            return;
        };
        let mut claims = self
            .shared
            .claims
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if claims.get(&registration.identifier) == Some(&self.name) {
            claims.remove(&registration.identifier);
        }
    }

    /// Returns true when the task should end.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Exited {
                generation,
                reason,
                success,
            } => self.on_exit(generation, reason, success),
            Event::Healthy { generation } => {
                self.on_health(generation, true);
                false
            }
            Event::Unhealthy { generation } => {
                self.on_health(generation, false);
                false
            }
            Event::Prepared { generation, result } => {
                self.on_prepared(generation, result);
                false
            }
        }
    }

    /// Stops building the environment; the plugin is stopped.
    fn cancel_preparing(&mut self) {
        if let Phase::Preparing { build, .. } = &self.phase {
            // Dropping the build kills the installer.
            build.abort();
            self.phase = Phase::Stopped;
        }
    }

    fn on_prepared(&mut self, generation: u64, result: Result<(), String>) {
        if !matches!(self.phase, Phase::Preparing { generation: current, .. } if current == generation)
        {
            return;
        }
        match result {
            Ok(()) => self.spawn_process(),
            Err(reason) => {
                let error = format!("environment build failed: {reason}");
                tracing::error!(plugin = %self.name, %error, "plugin failed");
                self.error = Some(error);
                self.phase = Phase::Failed;
            }
        }
    }

    fn on_exit(&mut self, generation: u64, reason: String, success: bool) -> bool {
        let phase = std::mem::replace(&mut self.phase, Phase::Stopped);
        let process = match &phase {
            Phase::Starting { process, .. }
            | Phase::Ready { process, .. }
            | Phase::Stopping { process, .. } => process,
            _ => {
                self.phase = phase;
                return false;
            }
        };
        if process.generation != generation {
            self.phase = phase;
            return false;
        }
        if let Some(probe) = &process.probe {
            probe.abort();
        }
        self.release_claim(process);
        tracing::info!(plugin = %self.name, pid = process.pid, %reason, "plugin process ended");
        let Phase::Stopping { then, waiters, .. } = phase else {
            self.after_crash(reason, success);
            return false;
        };
        let mut end_task = false;
        let mut answer = Ok(());
        match then {
            AfterStop::Stay => {
                self.last_exit_reason = Some(format!("stopped by operator ({reason})"));
            }
            AfterStop::Restart => {
                self.last_exit_reason = Some(format!("restarted by operator ({reason})"));
                answer = self.operator_start();
            }
            AfterStop::Crashed(crash) => self.after_crash(crash, false),
            AfterStop::Fail(error) => {
                self.last_exit_reason = Some(reason);
                self.error = Some(error);
                self.phase = Phase::Failed;
            }
            AfterStop::Shutdown => {
                self.last_exit_reason = Some(format!("supervisor shut down ({reason})"));
                end_task = true;
            }
        }
        self.publish();
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
        end_task
    }

    /// Decides what follows the end of a process that was not asked to stop.
    fn after_crash(&mut self, reason: String, success: bool) {
        self.last_exit_reason = Some(reason.clone());
        let policy = self
            .manifest
            .as_ref()
            .map(|manifest| manifest.restart.policy)
            .unwrap_or(RestartPolicy::Temporary);
        let restart = match policy {
            RestartPolicy::Permanent => true,
            RestartPolicy::Transient => !success,
            RestartPolicy::Temporary => false,
        };
        if !restart {
            self.phase = Phase::Exited;
            return;
        }
        match self.tracker.next(Instant::now(), rand::random::<f64>()) {
            RestartDecision::After(delay) => {
                tracing::info!(plugin = %self.name, delay = ?delay, "restarting after backoff");
                self.phase = Phase::Backoff {
                    until: Instant::now() + delay,
                };
            }
            RestartDecision::CrashLoop { restarts } => {
                let window = self
                    .manifest
                    .as_ref()
                    .map(|manifest| manifest.restart.restart_window)
                    .unwrap_or_default();
                let error = format!(
                    "crash loop: {restarts} restarts within {}; last exit: {reason}",
                    humantime::format_duration(window)
                );
                tracing::error!(plugin = %self.name, %error, "plugin failed");
                self.error = Some(error);
                self.phase = Phase::Failed;
            }
        }
    }

    fn on_health(&mut self, generation: u64, healthy: bool) {
        let Some(manifest) = self.manifest.as_ref().ok() else {
            return;
        };
        let health = manifest.health.clone();
        let window = manifest.restart.restart_window;
        if healthy
            && matches!(&self.phase, Phase::Starting { process, .. } if process.generation == generation)
        {
            self.become_ready(health.interval);
            return;
        }
        match &mut self.phase {
            Phase::Ready {
                process,
                since,
                missed,
                ..
            } if process.generation == generation => {
                if healthy {
                    *missed = 0;
                    if since.elapsed() >= window {
                        self.tracker.reset_backoff();
                    }
                    return;
                }
                *missed += 1;
                tracing::warn!(plugin = %self.name, missed = *missed, "health check failed");
                if *missed >= health.failures {
                    let reason = format!("health check failed {} times in a row", *missed);
                    self.begin_stop(AfterStop::Crashed(reason));
                }
            }
            _ => {}
        }
    }

    /// Starting → Ready, once the first health check answered SERVING.
    fn become_ready(&mut self, health_interval: Duration) {
        let phase = std::mem::replace(&mut self.phase, Phase::Stopped);
        let Phase::Starting { mut process, .. } = phase else {
            self.phase = phase;
            return;
        };
        process.probe = None;
        let now = Instant::now();
        tracing::info!(plugin = %self.name, pid = process.pid, "plugin ready");
        self.phase = Phase::Ready {
            process,
            since: now,
            missed: 0,
            next_check: now + health_interval,
        };
    }

    fn on_deadline(&mut self) {
        let Some(manifest) = self.manifest.as_ref().ok() else {
            return;
        };
        let start_timeout = manifest.start_timeout;
        let health = manifest.health.clone();
        match &mut self.phase {
            Phase::Starting { .. } => {
                let reason = format!(
                    "did not register and become healthy within the start timeout ({})",
                    humantime::format_duration(start_timeout)
                );
                tracing::warn!(plugin = %self.name, %reason, "start timeout");
                self.begin_stop(AfterStop::Crashed(reason));
            }
            Phase::Ready {
                process,
                next_check,
                ..
            } => {
                *next_check = Instant::now() + health.interval;
                if let Some(registration) = &process.registration {
                    spawn_health_check(
                        registration.health.clone(),
                        health.timeout,
                        process.generation,
                        self.events.clone(),
                    );
                }
            }
            Phase::Backoff { .. } if self.shared.shutdown.is_cancelled() => {
                self.phase = Phase::Stopped;
            }
            Phase::Backoff { .. } => self.start_process(),
            Phase::Stopping { .. } => self.kill_now(),
            Phase::Stopped | Phase::Preparing { .. } | Phase::Failed | Phase::Exited => {}
        }
    }

    /// Returns true when the task can end at once (no process to stop).
    fn begin_shutdown(&mut self) -> bool {
        match &self.phase {
            Phase::Starting { .. } | Phase::Ready { .. } => {
                self.begin_stop(AfterStop::Shutdown);
                false
            }
            Phase::Stopping { .. } => {
                if let Phase::Stopping { then, .. } = &mut self.phase {
                    *then = AfterStop::Shutdown;
                }
                false
            }
            _ => {
                self.cancel_preparing();
                self.phase = Phase::Stopped;
                true
            }
        }
    }

    /// SIGTERM to the group now, SIGKILL after the grace period.
    fn begin_stop(&mut self, then: AfterStop) {
        let phase = std::mem::replace(&mut self.phase, Phase::Stopped);
        let process = match phase {
            Phase::Starting { process, .. } | Phase::Ready { process, .. } => process,
            other => {
                self.phase = other;
                return;
            }
        };
        let grace = self
            .manifest
            .as_ref()
            .map(|manifest| manifest.stop_grace)
            .unwrap_or_default();
        spawn::signal_group(process.pid, Signal::SIGTERM);
        let kill_at = if self.shared.force.is_cancelled() {
            spawn::signal_group(process.pid, Signal::SIGKILL);
            None
        } else {
            Some(Instant::now() + grace)
        };
        self.phase = Phase::Stopping {
            process,
            kill_at,
            then,
            waiters: Vec::new(),
        };
    }

    fn kill_now(&mut self) {
        if let Phase::Stopping {
            process, kill_at, ..
        } = &mut self.phase
        {
            tracing::warn!(plugin = %self.name, pid = process.pid, "grace period over: SIGKILL");
            spawn::signal_group(process.pid, Signal::SIGKILL);
            *kill_at = None;
        }
    }

    /// Starts the plugin: builds its environment first when its manifest asks
    /// for one (a no-op when the environment matches its lock), then spawns it.
    fn start_process(&mut self) {
        let Ok(manifest) = &self.manifest else {
            self.phase = Phase::Failed;
            return;
        };
        if manifest.environment == EnvironmentKind::None {
            self.spawn_process();
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let folder = self.folder.clone();
        let timeout = manifest.environment_timeout;
        let logs = self.logs.clone();
        let events = self.events.clone();
        let span = tracing::info_span!("environment", plugin = %self.name);
        let build = tokio::spawn(
            async move {
                let note = |text: String| {
                    logs.push(logs::LogLine {
                        stream: LogStream::Supervisor,
                        text: text.into(),
                        at: std::time::SystemTime::now(),
                        pid: 0,
                    });
                };
                let result = match environment::prepare(&folder, timeout, |line| {
                    tracing::info!(target: "corral::plugin", "{line}");
                    note(line);
                })
                .await
                {
                    Ok(Prepared::UpToDate) => Ok(()),
                    Ok(Prepared::Built(took)) => {
                        note(format!("environment built in {:.1} s", took.as_secs_f64()));
                        Ok(())
                    }
                    Err(reason) => {
                        note(format!("environment build failed: {reason}"));
                        Err(reason)
                    }
                };
                let _ = events.send(Event::Prepared { generation, result }).await;
            }
            .instrument(span),
        );
        self.phase = Phase::Preparing {
            generation,
            build: build.abort_handle(),
        };
    }

    /// Spawns a new process. A failure to spawn counts as a crash.
    fn spawn_process(&mut self) {
        let Ok(manifest) = &self.manifest else {
            self.phase = Phase::Failed;
            return;
        };
        if self.started_once {
            self.restarts += 1;
        }
        self.started_once = true;
        self.generation += 1;
        let generation = self.generation;
        let token = format!("{}.{}", self.index, random_token());
        let working_dir = match &manifest.working_dir {
            Some(dir) => self.folder.join(dir),
            None => self.folder.clone(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("CORRAL_REGISTRY".into(), self.shared.registry.clone()),
            ("CORRAL_PLUGIN_TOKEN".into(), token.clone()),
            ("CORRAL_PLUGIN_NAME".into(), self.name.clone()),
            (
                "CORRAL_PROTOCOL_VERSION".into(),
                corral_proto::PROTOCOL_VERSION.to_string(),
            ),
        ];
        if manifest.allow_file_urls {
            env.push(("CORRAL_ALLOW_FILE_URLS".into(), "1".into()));
        }
        if let Some(host) = &self.shared.plugin_host {
            env.push(("CORRAL_PLUGIN_LISTEN".into(), "0.0.0.0:0".into()));
            env.push(("CORRAL_PLUGIN_HOST".into(), host.clone()));
        }
        env.extend(
            manifest
                .env_allow
                .iter()
                .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?))),
        );
        env.extend(manifest.env.clone());
        let spawned = spawn::resolve_program(&manifest.command, &self.folder).and_then(|program| {
            let confinement = match &self.shared.confined_in {
                Some(scratch) => {
                    let temporary = private_folder(scratch, &self.name, self.shared.plugin_user)?;
                    env.push(("TMPDIR".into(), temporary.display().to_string()));
                    Some(Confinement::for_plugin(
                        &self.folder,
                        &program,
                        &temporary,
                        &manifest.allow_read,
                        &manifest.allow_write,
                    ))
                }
                None => None,
            };
            spawn::spawn(&SpawnSpec {
                program: &program,
                args: &manifest.args,
                working_dir: &working_dir,
                env,
                limits: &manifest.limits,
                confinement: confinement.as_ref(),
                user: self.shared.plugin_user,
            })
            .map_err(|error| format!("failed to spawn {}: {error}", program.display()))
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(reason) => {
                tracing::error!(plugin = %self.name, %reason, "spawn failed");
                self.after_crash(reason, false);
                return;
            }
        };
        let Some(pid) = child.id() else {
            self.after_crash("the process ended before it could be watched".into(), false);
            return;
        };
        let span = tracing::info_span!("plugin", plugin = %self.name, pid);
        if let Some(stdout) = child.stdout.take() {
            logs::capture(
                stdout,
                LogStream::Stdout,
                pid,
                self.logs.clone(),
                span.clone(),
            );
        }
        if let Some(stderr) = child.stderr.take() {
            logs::capture(
                stderr,
                LogStream::Stderr,
                pid,
                self.logs.clone(),
                span.clone(),
            );
        }
        let events = self.events.clone();
        tokio::spawn(
            async move {
                let (reason, success) = match child.wait().await {
                    Ok(status) => describe_exit(status),
                    Err(error) => (format!("failed to wait for the process: {error}"), false),
                };
                // Whatever the leader left in its group goes with it, at once: the
                // sooner after reaping, the smaller the chance its pid is reused.
                spawn::signal_group(pid, Signal::SIGKILL);
                let _ = events
                    .send(Event::Exited {
                        generation,
                        reason,
                        success,
                    })
                    .await;
            }
            .instrument(span),
        );
        tracing::info!(plugin = %self.name, pid, generation, "plugin spawned");
        self.phase = Phase::Starting {
            process: Process {
                pid,
                generation,
                token: Some(token),
                registration: None,
                probe: None,
            },
            deadline: Instant::now() + manifest.start_timeout,
        };
    }

    fn publish(&self) {
        let process = match &self.phase {
            Phase::Starting { process, .. }
            | Phase::Ready { process, .. }
            | Phase::Stopping { process, .. } => Some(process),
            _ => None,
        };
        let registration = process.and_then(|process| process.registration.as_ref());
        let snapshot = PluginSnapshot {
            name: self.name.clone(),
            manifest_path: self.folder.join(MANIFEST_FILE),
            state: match &self.phase {
                Phase::Stopped => PluginState::Stopped,
                Phase::Preparing { .. } | Phase::Starting { .. } => PluginState::Starting,
                Phase::Ready { .. } => PluginState::Ready,
                Phase::Backoff { .. } => PluginState::Backoff,
                Phase::Stopping { .. } => PluginState::Stopping,
                Phase::Failed => PluginState::Failed,
                Phase::Exited => PluginState::Exited,
            },
            pid: process.map(|process| process.pid),
            endpoint: registration.map(|registration| registration.endpoint.clone()),
            restarts: self.restarts,
            last_exit_reason: self.last_exit_reason.clone(),
            ready_since: match &self.phase {
                Phase::Ready { since, .. } => Some(*since),
                _ => None,
            },
            identifier: registration.map(|registration| registration.identifier.clone()),
            metadata: registration.map(|registration| registration.metadata.clone()),
            error: self.error.clone(),
            retry_safe: self
                .manifest
                .as_ref()
                .is_ok_and(|manifest| manifest.retry_safe),
        };
        let changed = self.status.send_if_modified(|current| {
            if *current == snapshot {
                return false;
            }
            *current = snapshot.clone();
            true
        });
        if changed {
            let _no_watchers_is_fine = self.shared.changes.send(snapshot);
        }
    }
}

fn spawn_startup_probe(
    health: HealthClient<Channel>,
    generation: u64,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    tokio::spawn(async move {
        loop {
            if check(health.clone(), STARTUP_PROBE_INTERVAL * 5).await {
                let _ = events.send(Event::Healthy { generation }).await;
                return;
            }
            tokio::time::sleep(STARTUP_PROBE_INTERVAL).await;
        }
    })
    .abort_handle()
}

fn spawn_health_check(
    health: HealthClient<Channel>,
    timeout: Duration,
    generation: u64,
    events: mpsc::Sender<Event>,
) {
    tokio::spawn(async move {
        let event = if check(health, timeout).await {
            Event::Healthy { generation }
        } else {
            Event::Unhealthy { generation }
        };
        let _ = events.send(event).await;
    });
}

/// One `grpc.health.v1.Health/Check` of the whole server ("").
async fn check(mut health: HealthClient<Channel>, timeout: Duration) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout, health.check(request)).await {
        Ok(Ok(response)) => response.into_inner().status == ServingStatus::Serving as i32,
        _ => false,
    }
}

fn describe_exit(status: std::process::ExitStatus) -> (String, bool) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return (format!("exited with code {code}"), code == 0);
    }
    match status.signal().and_then(|raw| Signal::try_from(raw).ok()) {
        Some(signal) => (format!("killed by {signal}"), false),
        None => (format!("ended: {status}"), false),
    }
}

fn validate_metadata(metadata: &PluginMetadata) -> Result<(), String> {
    let name_ok = !metadata.name.is_empty()
        && metadata
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(format!(
            "name `{}` must be non-empty ASCII letters, digits, `-`, `_` or `.`",
            metadata.name
        ));
    }
    let version = metadata
        .version
        .strip_prefix('v')
        .unwrap_or(&metadata.version);
    if semver::Version::parse(version).is_err() {
        return Err(format!(
            "version `{}` is not a semantic version (e.g. v1.2.3)",
            metadata.version
        ));
    }
    // The QHAna plugin registry reads versions as PEP 440 and, on one it cannot
    // read, skips the rest of the runner's plugins: such a plugin is refused here.
    if !is_pep440(&metadata.version) {
        return Err(format!(
            "version `{}` cannot be read by the QHAna plugin registry (PEP 440): use a \
             pre-release such as v1.2.3-rc.1, v1.2.3-alpha.2 or v1.2.3-dev.4",
            metadata.version
        ));
    }
    Ok(())
}

/// Whether `version` is a version PEP 440 accepts (its permissive form, as
/// Python's `packaging.version.Version` parses it).
fn is_pep440(version: &str) -> bool {
    static PEP440: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?ix)^\s*v?
            (?:[0-9]+!)?
            [0-9]+(?:\.[0-9]+)*
            (?:[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?
            (?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?
            (?:[-_.]?dev[-_.]?[0-9]*)?
            (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?
            \s*$",
        )
        .ok()
    });
    PEP440
        .as_ref()
        .is_some_and(|pattern| pattern.is_match(version))
}

/// A plugin's private temporary folder (owner-only, owned by the plugin's
/// user), made when missing.
fn private_folder(
    scratch: &Path,
    plugin: &str,
    user: Option<PluginUser>,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let folder = scratch.join(plugin);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)
        .and_then(|()| std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)))
        .and_then(|()| match user {
            Some(user) => std::os::unix::fs::chown(&folder, Some(user.uid), Some(user.gid)),
            None => Ok(()),
        })
        .map_err(|error| {
            format!(
                "failed to make the temporary folder {}: {error}",
                folder.display()
            )
        })?;
    Ok(folder)
}

/// 32 random bytes in hex.
pub(crate) fn random_token() -> String {
    use std::fmt::Write;
    let bytes: [u8; 32] = rand::random();
    bytes
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_the_qhana_registry_cannot_read_are_refused() {
        for good in [
            "v0.2.1",
            "1.0.0",
            "v1.0.0-rc.1",
            "v1.0.0-alpha",
            "v1.0.0-beta.2",
            "1.0.0-dev.3",
            "v2.0.0+build.5",
            "v1.0.0-rc1",
        ] {
            assert!(is_pep440(good), "{good} should be accepted");
        }
        for bad in [
            "v1.0.0-x.7.z.92",
            "1.0.0-foo",
            "v1.0.0-rc.1.2",
            "latest",
            "",
        ] {
            assert!(!is_pep440(bad), "{bad} should be refused");
        }
        let mut metadata = PluginMetadata {
            name: "demo".into(),
            version: "v1.0.0-x.7.z.92".into(),
            ..PluginMetadata::default()
        };
        let refused = validate_metadata(&metadata).expect_err("refused");
        assert!(refused.contains("QHAna plugin registry"), "{refused}");
        metadata.version = "v1.0.0-rc.1".into();
        assert_eq!(validate_metadata(&metadata), Ok(()));
    }

    #[test]
    fn metadata_needs_a_name_and_a_semantic_version() {
        let metadata = |name: &str, version: &str| PluginMetadata {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        };
        assert!(validate_metadata(&metadata("hello-world", "v0.2.1")).is_ok());
        assert!(validate_metadata(&metadata("hello-world", "0.2.1")).is_ok());
        assert!(validate_metadata(&metadata("", "v0.2.1")).is_err());
        assert!(validate_metadata(&metadata("a b", "v0.2.1")).is_err());
        assert!(validate_metadata(&metadata("x", "latest")).is_err());
    }

    #[test]
    fn exit_reasons_are_readable() {
        use std::os::unix::process::ExitStatusExt;
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(exited), ("exited with code 3".into(), false));
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(describe_exit(killed), ("killed by SIGKILL".into(), false));
    }

    #[test]
    fn tokens_are_long_and_random() {
        assert_eq!(random_token().len(), 64);
        assert_ne!(random_token(), random_token());
    }
}

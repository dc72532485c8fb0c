//! Running tasks: invoke the plugin over gRPC, persist each event, write output
//! files to the store, notify followers and webhooks, and end every task
//! `SUCCESS` or `FAILURE`, whatever the plugin or the gateway does. See `tasks.md`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_proto::plugin::v1::{InvokeRequest, SubmitStepRequest, invoke_event::Event};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    directory::{Directory, LivePlugin},
    files::{FileSink, FileStore},
    live::{LiveEvent, LiveEvents},
    store::{Batch, FileKind, FileRecord, MAX_LOG_CHARS, Progress, Store, StoreError, TaskStatus},
    urls::BaseUrl,
    webhooks::{WebhookEvent, Webhooks},
};

/// Largest gRPC message accepted from a plugin: a 1 MiB chunk and its framing.
const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;
/// How long a task waits for its plugin to be ready again (after a crash or a
/// gateway restart) before it fails.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long after a broken stream the supervisor has to report the crash.
const CRASH_REPORT_WAIT: Duration = Duration::from_secs(2);
/// How long a step submission waits for its plugin to be listed again.
const STEP_READY_WAIT: Duration = Duration::from_secs(5);
/// How long ending one task may take at shutdown (a database that is down
/// must not hold the exit up).
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(2);
/// Longest log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 64 * 1024;
/// The longest a running task's events wait to be written together (they are
/// published to event-stream followers at once). See `tasks.md`.
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// One task to run: what and for whom (links use the client's base URL).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) task_id: String,
    pub(crate) plugin: String,
    pub(crate) inputs: BTreeMap<String, String>,
    pub(crate) base: BaseUrl,
    /// Whether the row was just created with its first attempt counted (a
    /// resumed task counts a new attempt before it runs).
    pub(crate) fresh: bool,
}

/// What a task runner needs; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub(crate) store: Store,
    pub(crate) files: Arc<dyn FileStore>,
    pub(crate) directory: Directory,
    pub(crate) live: LiveEvents,
    pub(crate) webhooks: Webhooks,
    /// Running tasks: ending one from outside (a failed step, shutdown) stops its
    /// runner. The base URL is for the links of a failure ended from outside.
    pub(crate) running: Arc<Mutex<HashMap<String, (CancellationToken, BaseUrl)>>>,
    /// Woken each time a runner ends.
    pub(crate) ended: Arc<tokio::sync::Notify>,
    /// Set when shutdown begins: no new task starts.
    pub(crate) closing: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The largest output file.
    pub(crate) max_output_bytes: u64,
    pub(crate) shutdown: CancellationToken,
}

/// How one invocation ended.
enum Outcome {
    Success,
    Failure(String),
    /// The plugin's process went away; the reason says how.
    Crashed(String),
    /// The gateway is shutting down, or the task was ended from outside: its row
    /// is left as it is (a restart resumes a `PENDING` one).
    Interrupted,
}

impl Runner {
    /// Runs a task that was just created (or found unfinished at start), in the background.
    /// Once shutdown began no task starts: it stays `PENDING` for the next start.
    pub(crate) fn spawn(&self, job: Job) {
        let runner = self.clone();
        let span = tracing::info_span!("task", id = %job.task_id, plugin = %job.plugin);
        let cancel = CancellationToken::new();
        {
            let mut running = self.lock_running();
            if self.shutdown_begun() {
                tracing::info!(task = %job.task_id, "not started: the gateway is shutting down");
                return;
            }
            running.insert(job.task_id.clone(), (cancel.clone(), job.base.clone()));
        }
        let task = async move {
            runner.metrics.task_started();
            if let Err(error) = runner.run(&job, &cancel).await {
                tracing::error!(task = %job.task_id, %error, "task runner failed");
                let reason = "the gateway could not record the task's progress";
                let _ = runner.end_failed(&job.task_id, reason, &job.base).await;
            }
            runner.lock_running().remove(&job.task_id);
            runner.metrics.task_ended();
            runner.ended.notify_waiters();
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Shutdown: lets running tasks finish within `grace` (or until `immediate`),
    /// then ends the rest `FAILURE` with the reason.
    pub(crate) async fn wind_down(&self, grace: Duration, immediate: &CancellationToken) {
        {
            // Under the lock `spawn` takes: no task starts after this.
            let _running = self.lock_running();
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let running = self.lock_running().len();
            if running == 0 {
                return;
            }
            tracing::info!(tasks = running, "waiting for running tasks to finish");
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = immediate.cancelled() => break,
            }
        }
        let remaining: Vec<(String, BaseUrl)> = self
            .lock_running()
            .iter()
            .map(|(task_id, (_, base))| (task_id.clone(), base.clone()))
            .collect();
        for (task_id, base) in remaining {
            let reason = "the gateway shut down before the task finished";
            let ended =
                tokio::time::timeout(FINISH_AT_SHUTDOWN, self.end_failed(&task_id, reason, &base));
            match ended.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(task = %task_id, %error, "failed to end a task at shutdown");
                }
                Err(_) => tracing::error!(task = %task_id, "ending a task at shutdown timed out"),
            }
        }
    }

    /// Whether shutdown began (no new task is taken).
    pub(crate) fn shutdown_begun(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock_running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (CancellationToken, BaseUrl)>> {
        self.running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Resumes the tasks a previous gateway left unfinished: re-run where the
    /// plugin says its tasks are safe to retry, else fail with the reason.
    pub(crate) async fn recover(&self) -> Result<usize, StoreError> {
        let pending = self.store.pending_tasks().await?;
        let count = pending.len();
        for (task_id, plugin, base_url) in pending {
            let runner = self.clone();
            tokio::spawn(async move {
                let base = BaseUrl::new(base_url, "");
                let Some(live) = runner.wait_until_ready(&plugin, READY_WAIT).await else {
                    let reason = format!(
                        "the gateway restarted while the task was running, and plugin {plugin} did not become ready again"
                    );
                    let _ = runner.end_failed(&task_id, &reason, &base).await;
                    return;
                };
                if !live.retry_safe {
                    let reason = "the gateway restarted while the task was running; \
                                  the plugin's tasks are not safe to run again";
                    let _ = runner.end_failed(&task_id, reason, &base).await;
                    return;
                }
                let inputs = match runner.store.task_inputs(&task_id).await {
                    Ok(Some((inputs, _))) => serde_json::from_str(&inputs).unwrap_or_default(),
                    _ => BTreeMap::new(),
                };
                let note = "re-running: the gateway restarted while the task was running";
                let _ = runner.store.append_log(&task_id, note).await;
                runner.spawn(Job {
                    task_id,
                    plugin,
                    inputs,
                    base,
                    fresh: false,
                });
            });
        }
        Ok(count)
    }

    async fn run(&self, job: &Job, cancel: &CancellationToken) -> Result<(), StoreError> {
        let task_id = job.task_id.as_str();
        let mut attempt = if job.fresh {
            1
        } else {
            match self.store.begin_attempt(task_id).await? {
                Some(attempt) => attempt,
                None => return Ok(()),
            }
        };
        let mut pending = Pending::default();
        loop {
            let Some(live) = self.directory.snapshot().ready(&job.plugin).cloned() else {
                let reason = format!("plugin {} is not ready", job.plugin);
                return self.fail(job, &reason, pending).await;
            };
            let outcome = self.invoke(job, &live, cancel, &mut pending).await?;
            match outcome {
                Outcome::Success => {
                    return self
                        .finish(task_id, TaskStatus::Success, None, &job.base, pending)
                        .await;
                }
                Outcome::Failure(reason) => return self.fail(job, &reason, pending).await,
                Outcome::Interrupted => {
                    // The row stays as it is (ended from outside, or `PENDING` for the
                    // next start); what the plugin said so far is kept if it still runs.
                    return self.write(task_id, &mut pending).await;
                }
                Outcome::Crashed(reason) if live.retry_safe && attempt < 2 => {
                    pending.log(&format!("{reason}; running the task again"));
                    self.write(task_id, &mut pending).await?;
                    if self
                        .wait_until_ready(&job.plugin, READY_WAIT)
                        .await
                        .is_none()
                    {
                        let reason = format!("{reason}, and it did not become ready again");
                        return self.fail(job, &reason, pending).await;
                    }
                    match self.store.begin_attempt(task_id).await? {
                        Some(next) => attempt = next,
                        // Ended from outside meanwhile.
                        None => return Ok(()),
                    }
                }
                Outcome::Crashed(reason) => return self.fail(job, &reason, pending).await,
            }
        }
    }

    async fn fail(&self, job: &Job, reason: &str, pending: Pending) -> Result<(), StoreError> {
        self.finish(
            &job.task_id,
            TaskStatus::Failure,
            Some(reason),
            &job.base,
            pending,
        )
        .await
    }

    /// Writes the task's pending events, then publishes them: a follower's
    /// snapshot (read after it subscribed) and the events it receives leave no
    /// gap, and a file it is told of can be fetched.
    async fn write(&self, task_id: &str, pending: &mut Pending) -> Result<(), StoreError> {
        let (batch, events) = pending.take();
        self.store.write(task_id, &batch).await?;
        self.publish(task_id, events);
        Ok(())
    }

    fn publish(&self, task_id: &str, events: Vec<LiveEvent>) {
        for event in events {
            self.live.publish(task_id, event);
        }
    }

    /// One invocation: the event stream, persisted as it comes.
    async fn invoke(
        &self,
        job: &Job,
        live: &LivePlugin,
        cancel: &CancellationToken,
        pending: &mut Pending,
    ) -> Result<Outcome, StoreError> {
        let (task_id, inputs, base) = (job.task_id.as_str(), &job.inputs, &job.base);
        let mut client = live.client().max_decoding_message_size(MAX_EVENT_BYTES);
        let request = InvokeRequest {
            task_id: task_id.to_owned(),
            inputs: inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        if self.shutdown.is_cancelled() || cancel.is_cancelled() {
            return Ok(Outcome::Interrupted);
        }
        let invoked = std::time::Instant::now();
        let mut stream = match client.invoke(request).await {
            Ok(response) => {
                self.metrics
                    .invoked(&live.identifier, invoked.elapsed().as_secs_f64());
                response.into_inner()
            }
            Err(status) => return Ok(self.broken(live, status).await),
        };
        let mut open_output: Option<OpenOutput> = None;
        let mut outputs = 0i64;
        loop {
            let write_by = pending.due();
            let message = tokio::select! {
                () = sleep_until(write_by), if write_by.is_some() => {
                    self.write(task_id, pending).await?;
                    continue;
                }
                () = self.shutdown.cancelled() => {
                    abort(open_output.take()).await;
                    return Ok(Outcome::Interrupted);
                }
                () = cancel.cancelled() => {
                    abort(open_output.take()).await;
                    return Ok(Outcome::Interrupted);
                }
                message = stream.message() => message,
            };
            let event = match message {
                Ok(Some(message)) => message.event,
                Ok(None) => {
                    abort(open_output.take()).await;
                    return Ok(Outcome::Failure(format!(
                        "plugin {} ended the task without a result",
                        live.identifier
                    )));
                }
                Err(status) => {
                    abort(open_output.take()).await;
                    return Ok(self.broken(live, status).await);
                }
            };
            let Some(event) = event else {
                abort(open_output.take()).await;
                return Ok(Outcome::Failure(format!(
                    "plugin {} sent an empty event",
                    live.identifier
                )));
            };
            match event {
                Event::Log(mut line) => {
                    if line.text.len() > MAX_LOG_LINE {
                        let mut end = MAX_LOG_LINE;
                        while !line.text.is_char_boundary(end) {
                            end -= 1;
                        }
                        line.text.truncate(end);
                        line.text.push_str(" [line cut]");
                    }
                    pending.log(&line.text);
                }
                Event::Progress(progress) => {
                    let progress = Progress {
                        value: progress.value,
                        start: progress.start,
                        target: progress.target,
                        unit: progress.unit,
                    };
                    pending.progress(progress);
                }
                Event::OutputBegin(begin) => {
                    if open_output.is_some() {
                        abort(open_output.take()).await;
                        return Ok(self.protocol_error(
                            live,
                            "began an output before ending the previous one",
                        ));
                    }
                    let record = FileRecord {
                        id: crate::ids::random_id(),
                        secret: crate::ids::random_id(),
                        task_id: Some(task_id.to_owned()),
                        kind: FileKind::Output,
                        position: outputs,
                        name: Some(begin.name).filter(|name| !name.is_empty()),
                        data_type: begin.data_type,
                        content_type: if begin.content_type.is_empty() {
                            "application/octet-stream".into()
                        } else {
                            begin.content_type
                        },
                        size: 0,
                        storage_key: String::new(),
                        inline: None,
                    };
                    open_output = Some(OpenOutput {
                        record,
                        small: Vec::new(),
                        sink: None,
                        size: 0,
                    });
                }
                Event::OutputChunk(chunk) => {
                    let Some(output) = open_output.as_mut() else {
                        return Ok(self.protocol_error(live, "sent output bytes outside an output"));
                    };
                    output.size += chunk.data.len() as u64;
                    if output.size > self.max_output_bytes {
                        abort(open_output.take()).await;
                        return Ok(Outcome::Failure(format!(
                            "plugin {} sent an output larger than the limit of {} bytes",
                            live.identifier, self.max_output_bytes
                        )));
                    }
                    if let Err(error) = output.write(&*self.files, chunk.data).await {
                        tracing::error!(%error, "failed to write an output file");
                        abort(open_output.take()).await;
                        return Ok(Outcome::Failure(
                            "the gateway could not store an output file".into(),
                        ));
                    }
                }
                Event::OutputEnd(_) => {
                    let Some(output) = open_output.take() else {
                        return Ok(self.protocol_error(live, "ended an output it had not begun"));
                    };
                    let record = match output.finish().await {
                        Ok(record) => record,
                        Err(error) => {
                            tracing::error!(%error, "failed to finish an output file");
                            return Ok(Outcome::Failure(
                                "the gateway could not store an output file".into(),
                            ));
                        }
                    };
                    pending.output(record, base);
                    outputs += 1;
                }
                Event::StepRequired(step) => {
                    if step.step_id.is_empty()
                        || !step
                            .step_id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Ok(self.protocol_error(live, "asked for a step with an invalid id"));
                    }
                    let form = crate::ui::encode_form(&step.inputs);
                    self.write(task_id, pending).await?;
                    self.store.add_step(task_id, &step.step_id, &form).await?;
                    let view = crate::views::step_view(
                        &live.identifier,
                        task_id,
                        &step.step_id,
                        false,
                        base,
                    );
                    self.live.publish(
                        task_id,
                        LiveEvent {
                            kind: "step",
                            data: serde_json::to_value(view).unwrap_or_default(),
                        },
                    );
                    self.webhooks.notify(
                        task_id,
                        base,
                        &[WebhookEvent::Steps, WebhookEvent::Details],
                    );
                }
                Event::Result(_) => {
                    if open_output.is_some() {
                        abort(open_output.take()).await;
                        return Ok(self.protocol_error(live, "finished with an output still open"));
                    }
                    return Ok(Outcome::Success);
                }
                Event::Error(error) => {
                    abort(open_output.take()).await;
                    let message = if error.message.is_empty() {
                        format!("plugin {} reported a failure", live.identifier)
                    } else {
                        error.message
                    };
                    return Ok(Outcome::Failure(message));
                }
            }
        }
    }

    /// Forwards a step's input (the step already marked cleared) to the plugin
    /// task that waits for it.
    pub(crate) async fn submit_step(
        &self,
        task_id: &str,
        plugin: &str,
        step_id: &str,
        inputs: BTreeMap<String, String>,
        base: &BaseUrl,
    ) -> Result<(), StoreError> {
        self.webhooks.notify(task_id, base, &[WebhookEvent::Steps]);
        let Some(live) = self.wait_until_ready(plugin, STEP_READY_WAIT).await else {
            let reason =
                format!("plugin {plugin} was not ready when the step `{step_id}` was submitted");
            return self.end_failed(task_id, &reason, base).await;
        };
        let request = SubmitStepRequest {
            task_id: task_id.to_owned(),
            step_id: step_id.to_owned(),
            inputs: inputs.into_iter().collect(),
        };
        if let Err(status) = live.client().submit_step(request).await {
            let reason = format!(
                "plugin {plugin} did not accept the input of step `{step_id}`: {}",
                status.message()
            );
            return self.end_failed(task_id, &reason, base).await;
        }
        Ok(())
    }

    /// Ends a task `FAILURE` from outside its runner (none, or one that is
    /// being stopped): no events of a runner go with it.
    pub(crate) async fn end_failed(
        &self,
        task_id: &str,
        reason: &str,
        base: &BaseUrl,
    ) -> Result<(), StoreError> {
        self.finish(
            task_id,
            TaskStatus::Failure,
            Some(reason),
            base,
            Pending::default(),
        )
        .await
    }

    /// Ends a task once, with its runner's last events; notifies its followers
    /// and subscribers.
    pub(crate) async fn finish(
        &self,
        task_id: &str,
        status: TaskStatus,
        reason: Option<&str>,
        base: &BaseUrl,
        mut pending: Pending,
    ) -> Result<(), StoreError> {
        let (batch, events) = pending.take();
        let Some(record) = self.store.finish(task_id, status, reason, &batch).await? else {
            return Ok(());
        };
        self.publish(task_id, events);
        let seconds = (record.finished_at - record.created_at) as f64 / 1000.0;
        self.metrics
            .task_finished(&record.plugin, status.as_str(), seconds);
        // A runner still streaming this task (it was ended from outside) stops.
        if let Some((cancel, _)) = self.lock_running().get(task_id) {
            cancel.cancel();
        }
        tracing::info!(task = %task_id, status = status.as_str(), reason = reason.unwrap_or(""), "task finished");
        if let Some(reason) = reason {
            self.live.publish(
                task_id,
                LiveEvent {
                    kind: "log",
                    data: json!({"text": reason}),
                },
            );
        }
        self.live.finish(
            task_id,
            LiveEvent {
                kind: "status",
                data: json!({"status": status.as_str()}),
            },
        );
        self.webhooks.notify(
            task_id,
            base,
            &[WebhookEvent::Status, WebhookEvent::Details],
        );
        Ok(())
    }

    /// A broken call: a crash of the plugin's process (with the supervisor's
    /// reason), or another gRPC error.
    async fn broken(&self, live: &LivePlugin, status: tonic::Status) -> Outcome {
        use tonic::Code;
        // A dead process shows as a broken transport; give the supervisor a
        // moment to report it, so the reason can say how it ended.
        let maybe_crashed = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        );
        if maybe_crashed {
            let identifier = live.identifier.clone();
            let pid = live.pid;
            let gone = tokio::time::timeout(
                CRASH_REPORT_WAIT,
                self.directory
                    .wait_for(|table| table.ready(&identifier).is_none_or(|now| now.pid != pid)),
            )
            .await
            .is_ok();
            if gone {
                let how = self
                    .directory
                    .snapshot()
                    .last_exit_reason(&live.folder)
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default();
                return Outcome::Crashed(format!(
                    "plugin {} stopped while running the task{how}",
                    live.identifier
                ));
            }
        }
        Outcome::Failure(format!(
            "plugin {} failed: {} ({:?})",
            live.identifier,
            status.message(),
            status.code()
        ))
    }

    fn protocol_error(&self, live: &LivePlugin, what: &str) -> Outcome {
        tracing::warn!(plugin = %live.identifier, what, "plugin protocol error");
        Outcome::Failure(format!("plugin {} {what}", live.identifier))
    }

    async fn wait_until_ready(&self, plugin: &str, limit: Duration) -> Option<Arc<LivePlugin>> {
        let wait = self
            .directory
            .wait_for(|table| table.ready(plugin).is_some());
        tokio::time::timeout(limit, wait).await.ok()?;
        self.directory.snapshot().ready(plugin).cloned()
    }
}

/// A running task's events not yet written (a [`Batch`]) and not yet
/// published, and when they must be.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    batch: Batch,
    /// What followers of the task's event stream get once the batch is written.
    events: Vec<LiveEvent>,
    /// When the oldest of them arrived.
    since: Option<tokio::time::Instant>,
    /// Characters of log taken by this runner; past [`MAX_LOG_CHARS`] lines are dropped.
    logged: usize,
}

impl Pending {
    fn arrived(&mut self, event: LiveEvent) {
        self.events.push(event);
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    fn log(&mut self, line: &str) {
        if self.logged >= MAX_LOG_CHARS {
            return;
        }
        self.logged += line.len() + 1;
        self.batch.log_line(line);
        self.arrived(LiveEvent {
            kind: "log",
            data: json!({"text": line}),
        });
    }

    fn progress(&mut self, progress: Progress) {
        let data = json!({
            "value": progress.value, "start": progress.start,
            "target": progress.target, "unit": progress.unit,
        });
        self.batch.progress = Some(progress);
        self.arrived(LiveEvent {
            kind: "progress",
            data,
        });
    }

    fn output(&mut self, record: FileRecord, base: &BaseUrl) {
        let data = serde_json::to_value(crate::views::output(&record, base)).unwrap_or_default();
        self.batch.outputs.push(record);
        self.arrived(LiveEvent {
            kind: "output",
            data,
        });
    }

    /// When the events must be written, if there are any.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|since| since + WRITE_EVERY)
    }

    fn take(&mut self) -> (Batch, Vec<LiveEvent>) {
        self.since = None;
        (
            std::mem::take(&mut self.batch),
            std::mem::take(&mut self.events),
        )
    }
}

/// Sleeps until `deadline`; forever without one (the caller's `select!`
/// guard skips it then).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Outputs up to this size are kept in their database row, written with the
/// task's next batch: no file of their own, and no sync of one.
const INLINE_OUTPUT: usize = 64 * 1024;

/// The output being received: in memory while small, then in the file store.
struct OpenOutput {
    record: FileRecord,
    small: Vec<u8>,
    sink: Option<Box<dyn FileSink>>,
    size: u64,
}

impl OpenOutput {
    async fn write(&mut self, files: &dyn FileStore, bytes: bytes::Bytes) -> std::io::Result<()> {
        if let Some(sink) = &mut self.sink {
            return sink.write(bytes).await;
        }
        if self.small.len() + bytes.len() <= INLINE_OUTPUT {
            self.small.extend_from_slice(&bytes);
            return Ok(());
        }
        self.record.storage_key = crate::ids::random_id();
        let mut sink = files.create(&self.record.storage_key).await?;
        let small = std::mem::take(&mut self.small);
        let written = async {
            sink.write(small.into()).await?;
            sink.write(bytes).await
        }
        .await;
        self.sink = Some(sink);
        written
    }

    /// The file's record, its bytes durable (in the file store) or inline.
    async fn finish(mut self) -> std::io::Result<FileRecord> {
        self.record.size = i64::try_from(self.size).unwrap_or(i64::MAX);
        match self.sink {
            Some(sink) => {
                sink.finish().await?;
            }
            None => self.record.inline = Some(self.small.into()),
        }
        Ok(self.record)
    }
}

async fn abort(output: Option<OpenOutput>) {
    if let Some(OpenOutput {
        sink: Some(sink), ..
    }) = output
    {
        sink.abort().await;
    }
}

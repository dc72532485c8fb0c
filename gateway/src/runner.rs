//! Running tasks: each call of a task (its start, or the continuation of a
//! submitted step) invokes the plugin over gRPC; the call's events become rows,
//! files, stream events and webhook notices; every task ends `SUCCESS` or
//! `FAILURE`, or waits for its step with nothing held in any process. See
//! `tasks.md`.
//!
//! [`CallRules`] is the event protocol as a synchronous state machine (what
//! each event means, in which order it may come); [`Runner::invoke`] is the one
//! async loop around it (transport, persistence, publishing).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use corral_proto::plugin::v1::{FormField, InvokeRequest, invoke_event::Event};
use tokio_util::sync::CancellationToken;

use crate::{
    directory::{Directory, LivePlugin},
    files::{FileSink, FileStore},
    lease::{Claim, Holder, Lease},
    live::{LiveEvent, LiveEvents},
    store::{
        Batch, CallRecord, FileKind, FileRecord, MAX_LOG_CHARS, Notices, Progress, Store,
        StoreError, TaskStatus,
    },
    urls::BaseUrl,
    views::{self, EncodedEvent, TaskEvent},
    webhooks::WebhookEvent,
};

/// Largest gRPC message accepted from a plugin: a 1 MiB chunk or state and its framing.
const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;
/// How long a call waits for its plugin to be ready (at its start, after a
/// crash, after a gateway restart) before the task fails.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long after a broken stream the supervisor has to report the crash.
const CRASH_REPORT_WAIT: Duration = Duration::from_secs(2);
/// How often a call that never reached its plugin (connection refused) is
/// tried again once the plugin is ready.
const UNREACHED_TRIES: u32 = 3;
/// How many times a call of a `retry_safe` plugin may run (after crashes of
/// the plugin or of the gateway).
const MAX_RUNS: u32 = 2;
/// How many orphaned calls one adoption takes.
const ADOPT_AT_ONCE: i64 = 64;
/// Every how many adoption rounds the gateway looks for strays among its own
/// running tasks (see [`Runner::take_up_strays`]).
const STRAYS_EVERY: u32 = 5;
/// How long (ms) a running task of this gateway's must have been unchanged
/// before it is looked at as a possible stray.
const STRAY_AFTER_MS: i64 = 5_000;
/// How long ending one task may take at shutdown (a database that is down
/// must not hold the exit up).
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(2);
/// Longest log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 64 * 1024;
/// Past this many bytes of a task's stored stream events, its calls store and
/// publish no more `log` and `progress` events (steps, outputs and the status
/// always go).
const MAX_STREAM_BYTES: usize = 8 * 1024 * 1024;
/// The longest a running task's events wait to be written together (they are
/// published to event-stream followers at once). See `tasks.md`.
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// What a call of a task is.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    /// The task's first call.
    Start,
    /// The continuation after step `id` was submitted with `inputs`.
    Step {
        id: String,
        inputs: BTreeMap<String, String>,
    },
}

/// One call of a task to run: what, for whom (links use the client's base
/// URL), and where it continues from.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) task_id: String,
    /// The plugin identifier the task started on: its steps resume on it.
    pub(crate) plugin: String,
    /// The task's validated inputs.
    pub(crate) inputs: BTreeMap<String, String>,
    pub(crate) base: BaseUrl,
    pub(crate) call: Call,
    /// The state (JSON) of the last step or checkpoint.
    pub(crate) state: Option<String>,
    /// How many outputs the task keeps; new ones follow them.
    pub(crate) outputs: i64,
    /// Whether the call's first attempt is counted in the row already (a new
    /// task, a submitted step); a recovered call counts one more first.
    pub(crate) counted: bool,
    /// A line for the log before the call runs (why it runs again).
    pub(crate) note: Option<&'static str>,
    /// How much log and stream the task has already (their caps are the
    /// task's, across its calls).
    pub(crate) taken: (usize, usize),
    /// The lease the call runs under, and the run of the call it is.
    pub(crate) claim: Claim,
    /// Stops this call (set when it is spawned, from the lease's token).
    cancel: CancellationToken,
}

impl Job {
    /// A new task's first call (its row just committed under `holder`'s lease).
    pub(crate) fn start(
        task_id: String,
        plugin: String,
        inputs: BTreeMap<String, String>,
        base: BaseUrl,
        holder: &Holder,
    ) -> Self {
        Self {
            task_id,
            plugin,
            inputs,
            base,
            call: Call::Start,
            state: None,
            outputs: 0,
            counted: true,
            note: None,
            taken: (0, 0),
            claim: holder.claim(1),
            cancel: CancellationToken::new(),
        }
    }

    /// A call as the database holds it (a submitted step, or a call adopted),
    /// owned by `holder`'s lease. Fails with the reason when its stored inputs
    /// cannot be read.
    pub(crate) fn stored(
        record: CallRecord,
        base: BaseUrl,
        holder: &Holder,
    ) -> Result<Self, String> {
        let unreadable = |what: &str| format!("the task's stored {what} cannot be read");
        let inputs = serde_json::from_str(&record.inputs).map_err(|_| unreadable("inputs"))?;
        let call = match record.step_id {
            Some(id) => {
                let inputs = record.step_inputs.as_deref().unwrap_or("{}");
                let inputs = serde_json::from_str(inputs)
                    .map_err(|_| unreadable(&format!("values of step `{id}`")))?;
                Call::Step { id, inputs }
            }
            None => Call::Start,
        };
        Ok(Self {
            task_id: record.id,
            plugin: record.plugin,
            inputs,
            base,
            call,
            state: record.state,
            outputs: record.state_outputs,
            counted: true,
            note: None,
            taken: (
                usize::try_from(record.log_chars).unwrap_or(usize::MAX),
                usize::try_from(record.event_chars).unwrap_or(usize::MAX),
            ),
            claim: holder.claim(record.attempts),
            cancel: CancellationToken::new(),
        })
    }
}

/// What a task runner needs; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub(crate) store: Store,
    pub(crate) files: Arc<dyn FileStore>,
    pub(crate) directory: Directory,
    pub(crate) live: LiveEvents,
    pub(crate) lease: Lease,
    /// Running calls by task: ending a task from outside (shutdown) stops its
    /// runner. The base URL is for the links of a failure ended from outside.
    pub(crate) running: Arc<Mutex<HashMap<String, RunningCall>>>,
    /// Tasks being taken up: claimed in the database (or about to be), their
    /// call not in `running` yet, each with how many are taking it up. See
    /// [`Runner::taking`].
    pub(crate) taking: Arc<Mutex<HashMap<String, usize>>>,
    /// Woken each time a runner ends.
    pub(crate) ended: Arc<tokio::sync::Notify>,
    /// Set when shutdown begins: no new call starts.
    pub(crate) closing: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The largest output file.
    pub(crate) max_output_bytes: u64,
    pub(crate) shutdown: CancellationToken,
}

/// A call in the runner's table of running calls.
#[derive(Debug)]
pub(crate) struct RunningCall {
    /// Tells this call's runner apart from the task's next one.
    number: u64,
    cancel: CancellationToken,
    base: BaseUrl,
    /// Its lease (any run of the call: it is ended from outside).
    claim: Claim,
}

/// A task this gateway is taking up, from before its claim is written until
/// its call is in the running table (or it is given up): the sweep for strays
/// leaves it alone meanwhile.
pub(crate) struct Taking {
    tasks: Arc<Mutex<HashMap<String, usize>>>,
    task_id: String,
}

impl Drop for Taking {
    fn drop(&mut self) {
        let mut tasks = lock(&self.tasks);
        if let Some(count) = tasks.get_mut(&self.task_id) {
            *count -= 1;
            if *count == 0 {
                tasks.remove(&self.task_id);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Why a gateway takes up a call it did not start in this process.
#[derive(Clone, Copy)]
enum TakenUp {
    /// The gateway that ran it lost its lease.
    Orphan,
    /// This gateway claimed it, but its call never ran or stopped unrecorded.
    Stray,
}

impl TakenUp {
    fn cause(self) -> &'static str {
        match self {
            Self::Orphan => "the gateway running the task went away",
            Self::Stray => "the task's call was cut off by a database failure",
        }
    }
}

/// How one invocation ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure(String),
    /// The task waits for a step, stored with the plugin's state.
    Waiting,
    /// The plugin's process went away; the reason says how.
    Crashed(String),
    /// The call never reached the plugin (its connection was refused).
    Unreached(String),
    /// The gateway is shutting down, or the task was ended from outside: its row
    /// is left as it is (a restart resumes a `PENDING` one).
    Interrupted,
}

impl Runner {
    /// Runs a call of a task in the background. Once shutdown began no call
    /// starts (false): the task stays `PENDING` for the next start.
    pub(crate) fn spawn(&self, mut job: Job) -> bool {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let runner = self.clone();
        let span = tracing::info_span!("task", id = %job.task_id, plugin = %job.plugin);
        // A call stops when its lease is lost: its task is another gateway's then.
        let cancel = job.claim.lost.child_token();
        job.cancel = cancel.clone();
        let number = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut running = self.lock_running();
            if self.shutdown_begun() {
                tracing::info!(task = %job.task_id, "not started: the gateway is shutting down");
                return false;
            }
            let mut claim = job.claim.clone();
            claim.fence.attempt = -1;
            let call = RunningCall {
                number,
                cancel: cancel.clone(),
                base: job.base.clone(),
                claim,
            };
            running.insert(job.task_id.clone(), call);
        }
        let task = async move {
            runner.metrics.task_started();
            let (task_id, base, claim) = (job.task_id.clone(), job.base.clone(), job.claim.clone());
            if let Err(error) = runner.run(job, &cancel).await {
                // A lost lease's task is another gateway's to end.
                if claim.lost.is_cancelled() {
                    tracing::info!(task = %task_id, %error, "stopped: the gateway lost its lease");
                } else {
                    tracing::error!(task = %task_id, %error, "task runner failed");
                    let reason = "the gateway could not record the task's progress";
                    let mut claim = claim;
                    claim.fence.attempt = -1;
                    if let Err(error) = runner.end_failed(&task_id, &claim, reason, &base).await {
                        tracing::error!(task = %task_id, %error, "failed to end a task");
                    }
                }
            }
            {
                // Only this call's entry: the task's next call may have its own.
                let mut running = runner.lock_running();
                if running
                    .get(&task_id)
                    .is_some_and(|call| call.number == number)
                {
                    running.remove(&task_id);
                }
            }
            runner.metrics.task_ended();
            runner.ended.notify_waiters();
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        true
    }

    /// Shutdown: lets running calls finish within `grace` (or until `immediate`),
    /// then ends their tasks `FAILURE` with the reason. Tasks waiting for a
    /// step have no call running and are not touched.
    pub(crate) async fn wind_down(&self, grace: Duration, immediate: &CancellationToken) {
        {
            // Under the lock `spawn` takes: no call starts after this.
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
        let remaining: Vec<(String, BaseUrl, Claim)> = self
            .lock_running()
            .iter()
            .map(|(task_id, call)| (task_id.clone(), call.base.clone(), call.claim.clone()))
            .collect();
        for (task_id, base, claim) in remaining {
            let reason = "the gateway shut down before the task finished";
            let ended = tokio::time::timeout(
                FINISH_AT_SHUTDOWN,
                self.end_failed(&task_id, &claim, reason, &base),
            );
            match ended.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(task = %task_id, %error, "failed to end a task at shutdown");
                }
                Err(_) => tracing::error!(task = %task_id, "ending a task at shutdown timed out"),
            }
        }
    }

    /// Whether shutdown began (no new call is taken).
    pub(crate) fn shutdown_begun(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningCall>> {
        lock(&self.running)
    }

    /// Marks `task_id` as being taken up by this gateway until the guard is
    /// dropped: hold it from before the claim is written until after
    /// [`Runner::spawn`].
    pub(crate) fn taking(&self, task_id: &str) -> Taking {
        *lock(&self.taking).entry(task_id.to_owned()).or_default() += 1;
        Taking {
            tasks: self.taking.clone(),
            task_id: task_id.to_owned(),
        }
    }

    /// Whether this process runs, or is taking up, the task's call. Taking
    /// is looked at first: a task leaves it only once it is running.
    fn holds(&self, task_id: &str) -> bool {
        lock(&self.taking).contains_key(task_id) || self.lock_running().contains_key(task_id)
    }

    /// Adopts, until shutdown, the calls whose gateway's lease expired (a
    /// gateway that died or lost its link, this one's previous start among
    /// them), at once and then every `every`. Tasks waiting for a step run no
    /// call and are not touched.
    pub(crate) async fn adopt_orphans(self, every: Duration) {
        let mut round = 0_u32;
        loop {
            round = round.wrapping_add(1);
            if let Some(holder) = self.lease.holder()
                && !self.shutdown_begun()
            {
                if round.is_multiple_of(STRAYS_EVERY)
                    && let Err(error) = self.take_up_strays(&holder).await
                {
                    tracing::warn!(%error, "failed to look for stray tasks");
                }
                match self.store.adopt(&holder.id, ADOPT_AT_ONCE).await {
                    Ok(calls) => {
                        let full = calls.len() as i64 >= ADOPT_AT_ONCE;
                        if !calls.is_empty() {
                            tracing::info!(
                                tasks = calls.len(),
                                "adopting running tasks of a gateway that went away"
                            );
                        }
                        for record in calls {
                            let taking = self.taking(&record.id);
                            let taken_up = self.clone().take_up(
                                record,
                                holder.clone(),
                                taking,
                                TakenUp::Orphan,
                            );
                            tokio::spawn(taken_up);
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "failed to look for orphaned tasks"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Takes up this gateway's strays: running tasks its lease holds whose
    /// call no part of this process runs or is starting. A claim whose
    /// answer was lost (the database went away as it committed) leaves one,
    /// as does a call whose end could not be written. Each is taken up as
    /// an orphan is.
    async fn take_up_strays(&self, holder: &Holder) -> Result<(), StoreError> {
        // The other way round: calls here of tasks ended elsewhere (an
        // operator cancelled them through another gateway, without Redis to
        // say so at once) stop.
        let running: Vec<String> = self.lock_running().keys().cloned().collect();
        if !running.is_empty() {
            for task_id in self.store.ended_among(&running).await? {
                if let Some(call) = self.lock_running().get(&task_id) {
                    call.cancel.cancel();
                }
            }
        }
        let before = crate::store::now_millis() - STRAY_AFTER_MS;
        for task_id in self.store.held_before(&holder.id, before).await? {
            if self.holds(&task_id) {
                continue;
            }
            let taking = self.taking(&task_id);
            let Some(record) = self.store.retake(&task_id, &holder.id).await? else {
                continue;
            };
            tracing::warn!(task = %task_id, "taking up a running task whose call had stopped");
            let taken_up = self
                .clone()
                .take_up(record, holder.clone(), taking, TakenUp::Stray);
            tokio::spawn(taken_up);
        }
        Ok(())
    }

    /// Stops, until shutdown, the calls here of tasks another gateway ended
    /// (an operator cancelled them there), as their end arrives over the
    /// fan-out.
    pub(crate) async fn stop_calls_ended_elsewhere(
        self,
        mut ended: tokio::sync::mpsc::Receiver<String>,
    ) {
        loop {
            let task_id = tokio::select! {
                task_id = ended.recv() => task_id,
                () = self.shutdown.cancelled() => None,
            };
            let Some(task_id) = task_id else {
                return;
            };
            if let Some(call) = self.lock_running().get(&task_id) {
                tracing::info!(task = %task_id, "stopping a call: another gateway ended its task");
                call.cancel.cancel();
            }
        }
    }

    /// Runs a call taken up again where the plugin says its tasks are safe
    /// to retry, from their last state; else ends its task with the reason.
    async fn take_up(self, record: CallRecord, holder: Holder, _taking: Taking, why: TakenUp) {
        let base = BaseUrl::new(record.base_url.clone(), "");
        let (task_id, plugin) = (record.id.clone(), record.plugin.clone());
        let mut claim = holder.claim(record.attempts);
        let reason = match self.adopted(record, base.clone(), &holder, why).await {
            Ok(job) => {
                // Refused only at shutdown: another gateway (or the next start) adopts it.
                let _started = self.spawn(job);
                return;
            }
            Err(reason) => reason,
        };
        tracing::info!(task = %task_id, %plugin, %reason, "ending a task taken up");
        claim.fence.attempt = -1;
        if let Err(error) = self.end_failed(&task_id, &claim, &reason, &base).await {
            tracing::error!(task = %task_id, %error, "failed to end an adopted task");
        }
    }

    /// The job that runs a call taken up again, or why it cannot.
    async fn adopted(
        &self,
        record: CallRecord,
        base: BaseUrl,
        holder: &Holder,
        why: TakenUp,
    ) -> Result<Job, String> {
        let plugin = record.plugin.clone();
        let cause = why.cause();
        let mut job = Job::stored(record, base, holder)?;
        let Some(live) = self.wait_until_ready(&plugin, READY_WAIT).await else {
            return Err(format!(
                "{cause}, and plugin {plugin} did not become ready again"
            ));
        };
        if !live.retry_safe {
            return Err(format!(
                "{cause}; the plugin's tasks are not safe to run again"
            ));
        }
        job.counted = false;
        job.note = Some(match why {
            TakenUp::Orphan => "re-running: the gateway running the task went away",
            TakenUp::Stray => "re-running: the task's call was cut off by a database failure",
        });
        Ok(job)
    }

    async fn run(&self, mut job: Job, cancel: &CancellationToken) -> Result<(), StoreError> {
        let mut pending = Pending {
            logged: job.taken.0,
            streamed: job.taken.1,
            ..Pending::default()
        };
        if let Some(note) = job.note {
            pending.log(note);
        }
        let mut attempt = 1;
        if !job.counted {
            match self.begin_attempt(&mut job).await? {
                Some(next) => attempt = next,
                None => return Ok(()),
            }
            if attempt > MAX_RUNS {
                let reason = format!(
                    "the gateway running the task went away, \
                     and the call had run {MAX_RUNS} times already"
                );
                return self.fail(&job, &reason, pending).await;
            }
        }
        let mut unreached = 0;
        loop {
            let Some(live) = self.wait_until_ready(&job.plugin, READY_WAIT).await else {
                let reason = format!(
                    "plugin {} was not ready within {} s",
                    job.plugin,
                    READY_WAIT.as_secs()
                );
                return self.fail(&job, &reason, pending).await;
            };
            let outcome = self
                .invoke(&job, &live, attempt, cancel, &mut pending)
                .await?;
            let crash = match outcome {
                Outcome::Success => {
                    return self
                        .finish(
                            &job.task_id,
                            &job.claim,
                            TaskStatus::Success,
                            None,
                            &job.base,
                            pending,
                        )
                        .await;
                }
                Outcome::Failure(reason) => return self.fail(&job, &reason, pending).await,
                // Stored with its step: nothing runs until it is submitted.
                Outcome::Waiting => return Ok(()),
                Outcome::Interrupted => {
                    // The row stays as it is (ended from outside, or `PENDING` for
                    // the gateway that adopts it); what the plugin said so far is
                    // kept if the task is still this gateway's.
                    if job.claim.lost.is_cancelled() {
                        return Ok(());
                    }
                    return self.write(&job, &mut pending).await;
                }
                Outcome::Unreached(reason) if unreached < UNREACHED_TRIES => {
                    // Nothing ran: the same attempt, once the plugin is back.
                    tracing::info!(%reason, "the call did not reach the plugin; trying again");
                    unreached += 1;
                    let replaced = self.directory.wait_for(|table| !table.is_serving(&live));
                    let _still_the_same = tokio::time::timeout(CRASH_REPORT_WAIT, replaced).await;
                    continue;
                }
                Outcome::Crashed(reason) | Outcome::Unreached(reason) => reason,
            };
            if !live.retry_safe || attempt >= MAX_RUNS {
                return self.fail(&job, &crash, pending).await;
            }
            pending.log(&format!("{crash}; running the task again"));
            self.write(&job, &mut pending).await?;
            match self.begin_attempt(&mut job).await? {
                Some(next) => attempt = next,
                // Ended from outside meanwhile.
                None => return Ok(()),
            }
        }
    }

    /// Counts one more run of the job's call, which continues from the last
    /// state the task saved. `None`: the task has ended meanwhile.
    async fn begin_attempt(&self, job: &mut Job) -> Result<Option<u32>, StoreError> {
        let Some(attempt) = self
            .durably(&job.claim, || {
                self.store.begin_attempt(&job.task_id, &job.claim.fence)
            })
            .await?
        else {
            return Ok(None);
        };
        for key in &attempt.dropped_files {
            if let Err(error) = self.files.delete(key).await {
                tracing::warn!(%error, key, "failed to delete a dropped output file");
            }
        }
        job.state = attempt.state;
        job.outputs = attempt.state_outputs;
        job.claim.fence.attempt = attempt.attempts;
        Ok(Some(u32::try_from(attempt.attempts).unwrap_or(u32::MAX)))
    }

    async fn fail(&self, job: &Job, reason: &str, pending: Pending) -> Result<(), StoreError> {
        self.finish(
            &job.task_id,
            &job.claim,
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
    async fn write(&self, job: &Job, pending: &mut Pending) -> Result<(), StoreError> {
        let (batch, events) = pending.take();
        if batch.is_empty() {
            return Ok(());
        }
        let task_id = &job.task_id;
        let written = self
            .durably(&job.claim, || {
                self.store.write(task_id, &job.claim.fence, &batch)
            })
            .await?;
        match written {
            Some(count) => self.publish(task_id, numbered(events, count)),
            // Ended from outside (an operator cancelled it on another
            // gateway), or no longer this call's: this call stops.
            None => job.cancel.cancel(),
        }
        Ok(())
    }

    /// Ends an unfinished task, running or waiting, wherever it runs: it ends
    /// `FAILURE` with `reason` at once, and its call (if it runs here) is
    /// cancelled, so its plugin sees the cancellation; a call on another
    /// gateway stops as the end reaches it. Whether this ended it (false: it
    /// had ended already). Not held while the database is away: the operator
    /// is answered 503 and tries again.
    pub(crate) async fn cancel(
        &self,
        task_id: &str,
        reason: &str,
        base: &BaseUrl,
    ) -> Result<bool, StoreError> {
        let status = TaskStatus::Failure;
        let (batch, events, task_url) =
            last_batch(task_id, status, Some(reason), base, Pending::default());
        let fence = crate::store::Fence::operator();
        let Some(record) = self
            .store
            .finish(task_id, &fence, status, &batch, end_notices(&task_url))
            .await?
        else {
            return Ok(false);
        };
        self.ended(task_id, status, Some(reason), &record, events);
        Ok(true)
    }

    fn publish(&self, task_id: &str, events: impl Iterator<Item = LiveEvent>) {
        self.live.publish(task_id, events.collect());
    }

    /// One invocation: the event stream, persisted as it comes.
    async fn invoke(
        &self,
        job: &Job,
        live: &LivePlugin,
        attempt: u32,
        cancel: &CancellationToken,
        pending: &mut Pending,
    ) -> Result<Outcome, StoreError> {
        if self.shutdown.is_cancelled() || cancel.is_cancelled() {
            return Ok(Outcome::Interrupted);
        }
        pending.batch.host = Some(live.host_url.clone());
        let (step_id, step_inputs) = match &job.call {
            Call::Start => (String::new(), BTreeMap::new()),
            Call::Step { id, inputs } => (id.clone(), inputs.clone()),
        };
        let request = InvokeRequest {
            task_id: job.task_id.clone(),
            inputs: job.inputs.clone().into_iter().collect(),
            step_id,
            step_inputs: step_inputs.into_iter().collect(),
            state: job.state.clone().unwrap_or_default(),
            attempt,
        };
        let mut client = live.client().max_decoding_message_size(MAX_EVENT_BYTES);
        // Counted as running on its host until the call ends (least in flight first).
        let _running = live.begin_call();
        let invoked = std::time::Instant::now();
        let answered = tokio::select! {
            answered = client.invoke(request) => answered,
            () = self.shutdown.cancelled() => return Ok(Outcome::Interrupted),
            () = cancel.cancelled() => return Ok(Outcome::Interrupted),
        };
        let mut stream = match answered {
            Ok(response) => {
                self.metrics.invoked(
                    &live.identifier,
                    &live.folder,
                    invoked.elapsed().as_secs_f64(),
                );
                response.into_inner()
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Ok(Outcome::Unreached(format!(
                    "plugin {} could not be reached: {}",
                    live.identifier,
                    status.message()
                )));
            }
            Err(status) => return Ok(self.broken(live, status).await),
        };
        let mut rules = CallRules::new(job, live, self.max_output_bytes);
        let mut output: Option<OpenOutput> = None;
        let outcome = async {
            loop {
                let write_by = pending.due();
                let message = tokio::select! {
                    () = sleep_until(write_by), if write_by.is_some() => {
                        self.write(job, pending).await?;
                        continue;
                    }
                    () = self.shutdown.cancelled() => return Ok(Outcome::Interrupted),
                    () = cancel.cancelled() => return Ok(Outcome::Interrupted),
                    message = stream.message() => message,
                };
                let action = match message {
                    Ok(Some(message)) => rules.on_event(message.event),
                    Ok(None) => rules.breach("ended the task without a result"),
                    Err(status) => return Ok(self.broken(live, status).await),
                };
                match action {
                    Action::Log(text) => pending.log(&text),
                    Action::Progress(progress) => pending.progress(progress),
                    Action::BeginOutput(record) => output = Some(OpenOutput::new(record)),
                    Action::Write(bytes) => {
                        let written = match output.as_mut() {
                            Some(open) => open.write(&*self.files, bytes).await,
                            None => Err(std::io::Error::other("no output is open")),
                        };
                        if let Err(error) = written {
                            tracing::error!(%error, "failed to write an output file");
                            return Ok(Outcome::Failure(
                                "the gateway could not store an output file".into(),
                            ));
                        }
                    }
                    Action::EndOutput => {
                        let finished = match output.take() {
                            Some(open) => open.finish().await,
                            None => Err(std::io::Error::other("no output is open")),
                        };
                        match finished {
                            Ok(record) => pending.output(record, &job.base),
                            Err(error) => {
                                tracing::error!(%error, "failed to finish an output file");
                                return Ok(Outcome::Failure(
                                    "the gateway could not store an output file".into(),
                                ));
                            }
                        }
                    }
                    Action::Checkpoint(state) => {
                        pending.batch.state = Some((state, rules.outputs));
                        self.write(job, pending).await?;
                    }
                    Action::Wait {
                        step_id,
                        form,
                        state,
                    } => {
                        pending.batch.state = Some((state, rules.outputs));
                        self.wait_for_step(job, &step_id, &form, pending).await?;
                        return Ok(Outcome::Waiting);
                    }
                    Action::Succeed => return Ok(Outcome::Success),
                    Action::Fail(reason) => return Ok(Outcome::Failure(reason)),
                }
            }
        }
        .await;
        // The one way out: an output still open is never kept.
        abort(output.take()).await;
        outcome
    }

    /// Stores the step the task now waits for, with the call's last events
    /// and the state to continue from; then tells followers and subscribers.
    async fn wait_for_step(
        &self,
        job: &Job,
        step_id: &str,
        form: &[FormField],
        pending: &mut Pending,
    ) -> Result<(), StoreError> {
        let view = views::step_view(&job.plugin, &job.task_id, step_id, false, &job.base);
        pending.arrived(TaskEvent::Step(view));
        let (batch, events) = pending.take();
        let task_url = job.base.absolute(&format!("/tasks/{}/", job.task_id));
        let notices = Notices {
            task_url: &task_url,
            events: &[WebhookEvent::Steps.as_str(), WebhookEvent::Details.as_str()],
        };
        let form = crate::ui::encode_form(form);
        let stored = self
            .durably(&job.claim, || {
                self.store.wait_for_step(
                    &job.task_id,
                    &job.claim.fence,
                    step_id,
                    &form,
                    &batch,
                    notices,
                )
            })
            .await?;
        if let Some(count) = stored {
            tracing::info!(task = %job.task_id, step = step_id, "task waits for a step");
            self.publish(&job.task_id, numbered(events, count));
        }
        Ok(())
    }

    /// Ends a task `FAILURE` from outside its runner (none, or one that is
    /// being stopped): no events of a runner go with it.
    pub(crate) async fn end_failed(
        &self,
        task_id: &str,
        claim: &Claim,
        reason: &str,
        base: &BaseUrl,
    ) -> Result<(), StoreError> {
        self.finish(
            task_id,
            claim,
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
        claim: &Claim,
        status: TaskStatus,
        reason: Option<&str>,
        base: &BaseUrl,
        pending: Pending,
    ) -> Result<(), StoreError> {
        let (batch, events, task_url) = last_batch(task_id, status, reason, base, pending);
        let notices = end_notices(&task_url);
        let Some(record) = self
            .durably(claim, || {
                self.store
                    .finish(task_id, &claim.fence, status, &batch, notices)
            })
            .await?
        else {
            return Ok(());
        };
        self.ended(task_id, status, reason, &record, events);
        Ok(())
    }

    /// What follows a task's end: its metrics, the stop of a runner still
    /// streaming it (it was ended from outside), and its last events to its
    /// followers here and elsewhere.
    fn ended(
        &self,
        task_id: &str,
        status: TaskStatus,
        reason: Option<&str>,
        record: &crate::store::Finished,
        events: Vec<EncodedEvent>,
    ) {
        let seconds = (record.finished_at - record.created_at) as f64 / 1000.0;
        self.metrics.task_finished(
            &self.directory.snapshot(),
            &record.plugin,
            status.as_str(),
            seconds,
        );
        if let Some(call) = self.lock_running().get(task_id) {
            call.cancel.cancel();
        }
        tracing::info!(task = %task_id, status = status.as_str(), reason = reason.unwrap_or(""), "task finished");
        self.live
            .finish(task_id, numbered(events, record.event_count).collect());
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
            let gone = tokio::time::timeout(
                CRASH_REPORT_WAIT,
                self.directory.wait_for(|table| !table.is_serving(live)),
            )
            .await
            .is_ok();
            if gone {
                let how = self
                    .directory
                    .snapshot()
                    .last_exit_reason(live)
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

    /// Runs a write of a task's progress until the database takes it: while it
    /// is unavailable the write is tried again, with backoff, until it is back,
    /// the gateway shuts down, or the claim's lease is lost (the task then
    /// stays `PENDING` for the gateway that adopts it). Meanwhile the plugin's
    /// stream waits: gRPC flow control holds it.
    async fn durably<T, F, Fut>(&self, claim: &Claim, write: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            let stopped = self.shutdown.is_cancelled() || claim.lost.is_cancelled();
            match write().await {
                Err(error) if error.is_unavailable() && !stopped => {
                    tracing::warn!(%error, retry_in = ?delay, "the database is unavailable; holding the task's progress");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => return Err(error),
                        () = claim.lost.cancelled() => return Err(error),
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                written => return written,
            }
        }
    }

    async fn wait_until_ready(&self, plugin: &str, limit: Duration) -> Option<Arc<LivePlugin>> {
        if let Some(live) = self.directory.snapshot().ready(plugin) {
            return Some(live.clone());
        }
        let wait = self
            .directory
            .wait_for(|table| table.ready(plugin).is_some());
        tokio::time::timeout(limit, wait).await.ok()?;
        self.directory.snapshot().ready(plugin).cloned()
    }
}

/// A task's last batch: `pending` with the reason (as a log line) and the
/// final status event; the events for followers; the task's URL.
fn last_batch(
    task_id: &str,
    status: TaskStatus,
    reason: Option<&str>,
    base: &BaseUrl,
    mut pending: Pending,
) -> (Batch, Vec<EncodedEvent>, String) {
    if let Some(reason) = reason {
        pending.reason(reason);
    }
    pending.arrived(TaskEvent::status(status.as_str()));
    let (batch, events) = pending.take();
    (batch, events, base.absolute(&format!("/tasks/{task_id}/")))
}

/// The webhook events a task's end notifies.
const END_EVENTS: [&str; 2] = [
    WebhookEvent::Status.as_str(),
    WebhookEvent::Details.as_str(),
];

/// The notices a task's end writes.
fn end_notices(task_url: &str) -> Notices<'_> {
    Notices {
        task_url,
        events: &END_EVENTS,
    }
}

/// Events just stored, numbered: the last of them is the task's `count`th.
fn numbered(events: Vec<EncodedEvent>, count: i64) -> impl Iterator<Item = LiveEvent> {
    let count = u64::try_from(count).unwrap_or_default();
    let first = (count + 1).saturating_sub(events.len() as u64);
    events
        .into_iter()
        .zip(first..)
        .map(|(event, id)| LiveEvent {
            id,
            name: event.name,
            data: event.data.into(),
        })
}

/// What an event of a call means for the task.
#[derive(Debug, PartialEq)]
enum Action {
    Log(String),
    Progress(Progress),
    /// An output file begins (its record, not yet stored).
    BeginOutput(FileRecord),
    /// Bytes of the open output.
    Write(bytes::Bytes),
    /// The open output is complete.
    EndOutput,
    /// A state to continue from should the call run again.
    Checkpoint(String),
    /// The call ends: the task waits for a step.
    Wait {
        step_id: String,
        form: Vec<FormField>,
        state: String,
    },
    Succeed,
    Fail(String),
}

/// The rules of one call's event stream, without I/O: which event may come
/// when, and what it means. A breach fails the task with the rule it broke.
#[derive(Debug)]
struct CallRules {
    task_id: String,
    identifier: String,
    max_output_bytes: u64,
    /// Bytes of the open output, if one is open.
    open: Option<u64>,
    /// Outputs the task has (the position of the next one).
    outputs: i64,
}

impl CallRules {
    fn new(job: &Job, live: &LivePlugin, max_output_bytes: u64) -> Self {
        Self {
            task_id: job.task_id.clone(),
            identifier: live.identifier.clone(),
            max_output_bytes,
            open: None,
            outputs: job.outputs,
        }
    }

    fn on_event(&mut self, event: Option<Event>) -> Action {
        let Some(event) = event else {
            return self.breach("sent an empty event");
        };
        match event {
            Event::Log(line) => Action::Log(cut(line.text)),
            Event::Progress(progress) => Action::Progress(Progress {
                value: progress.value,
                start: progress.start,
                target: progress.target,
                unit: progress.unit,
            }),
            Event::OutputBegin(begin) => {
                if self.open.is_some() {
                    return self.breach("began an output before ending the previous one");
                }
                self.open = Some(0);
                Action::BeginOutput(FileRecord {
                    id: crate::ids::random_id(),
                    secret: crate::ids::random_id(),
                    task_id: Some(self.task_id.clone()),
                    kind: FileKind::Output,
                    position: self.outputs,
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
                })
            }
            Event::OutputChunk(chunk) => {
                let Some(size) = self.open.as_mut() else {
                    return self.breach("sent output bytes outside an output");
                };
                *size += chunk.data.len() as u64;
                if *size > self.max_output_bytes {
                    return Action::Fail(format!(
                        "plugin {} sent an output larger than the limit of {} bytes",
                        self.identifier, self.max_output_bytes
                    ));
                }
                Action::Write(chunk.data)
            }
            Event::OutputEnd(_) => {
                if self.open.take().is_none() {
                    return self.breach("ended an output it had not begun");
                }
                self.outputs += 1;
                Action::EndOutput
            }
            Event::Checkpoint(checkpoint) => match check_state(&checkpoint.state) {
                Ok(()) => Action::Checkpoint(checkpoint.state),
                Err(what) => self.breach(&format!("sent a checkpoint whose state {what}")),
            },
            Event::StepRequired(step) => {
                if self.open.is_some() {
                    return self.breach("asked for a step with an output still open");
                }
                let valid_id = !step.step_id.is_empty()
                    && step
                        .step_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid_id {
                    return self.breach("asked for a step with an invalid id");
                }
                if let Err(what) = check_state(&step.state) {
                    return self.breach(&format!("asked for a step whose state {what}"));
                }
                Action::Wait {
                    step_id: step.step_id,
                    form: step.inputs,
                    state: step.state,
                }
            }
            Event::Result(_) => {
                if self.open.is_some() {
                    return self.breach("finished with an output still open");
                }
                Action::Succeed
            }
            Event::Error(error) => Action::Fail(if error.message.is_empty() {
                format!("plugin {} reported a failure", self.identifier)
            } else {
                error.message
            }),
        }
    }

    /// A broken rule: the task fails with it.
    fn breach(&self, what: &str) -> Action {
        tracing::warn!(plugin = %self.identifier, what, "plugin protocol error");
        Action::Fail(format!("plugin {} {what}", self.identifier))
    }
}

/// Why a state cannot be kept, if it cannot: it must be JSON of at most
/// [`MAX_STATE_BYTES`](corral_proto::MAX_STATE_BYTES).
fn check_state(state: &str) -> Result<(), String> {
    if state.len() > corral_proto::MAX_STATE_BYTES {
        return Err(format!(
            "is larger than the limit of {} bytes",
            corral_proto::MAX_STATE_BYTES
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(state)
        .map(|_| ())
        .map_err(|_| "is not JSON".to_owned())
}

/// A log line of at most [`MAX_LOG_LINE`] bytes.
fn cut(mut text: String) -> String {
    if text.len() > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [line cut]");
    }
    text
}

/// A running task's events not yet written (a [`Batch`]) and not yet
/// published, and when they must be.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    batch: Batch,
    /// What followers of the task's event stream get once the batch is written.
    events: Vec<EncodedEvent>,
    /// When the oldest of them arrived.
    since: Option<tokio::time::Instant>,
    /// Characters of the task's log; past [`MAX_LOG_CHARS`] lines are dropped.
    logged: usize,
    /// Bytes of the task's stored stream (see [`MAX_STREAM_BYTES`]).
    streamed: usize,
}

impl Pending {
    /// An event for the task's stream; `log` and `progress` are dropped past
    /// [`MAX_STREAM_BYTES`].
    fn arrived(&mut self, event: TaskEvent) {
        let droppable = matches!(event, TaskEvent::Log { .. } | TaskEvent::Progress(_));
        if droppable && self.streamed >= MAX_STREAM_BYTES {
            return;
        }
        let encoded = event.encode();
        let line = encoded.line();
        self.streamed += line.len() + 1;
        self.batch.event(&line);
        self.events.push(encoded);
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    fn log(&mut self, line: &str) {
        if self.logged >= MAX_LOG_CHARS {
            return;
        }
        self.reason(line);
    }

    /// A log line that is always kept (the reason a task failed).
    fn reason(&mut self, line: &str) {
        self.logged += line.len() + 1;
        self.batch.log_line(line);
        self.arrived(TaskEvent::log(line));
    }

    fn progress(&mut self, progress: Progress) {
        let event = TaskEvent::Progress(views::Progress::from(&progress));
        self.batch.progress = Some(progress);
        self.arrived(event);
    }

    fn output(&mut self, record: FileRecord, base: &BaseUrl) {
        let event = TaskEvent::Output(views::output(&record, base));
        self.batch.outputs.push(record);
        self.arrived(event);
    }

    /// When the events must be written, if there are any.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|since| since + WRITE_EVERY)
    }

    fn take(&mut self) -> (Batch, Vec<EncodedEvent>) {
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
    fn new(record: FileRecord) -> Self {
        Self {
            record,
            small: Vec::new(),
            sink: None,
            size: 0,
        }
    }

    async fn write(&mut self, files: &dyn FileStore, bytes: bytes::Bytes) -> std::io::Result<()> {
        self.size += bytes.len() as u64;
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

#[cfg(test)]
mod tests {
    use corral_proto::plugin::v1 as pb;

    use super::*;

    fn rules() -> CallRules {
        CallRules {
            task_id: "t".into(),
            identifier: "p@v1".into(),
            max_output_bytes: 4,
            open: None,
            outputs: 2,
        }
    }

    fn chunk(bytes: &'static [u8]) -> Option<Event> {
        Some(Event::OutputChunk(pb::OutputChunk {
            data: bytes::Bytes::from_static(bytes),
        }))
    }

    fn begin() -> Option<Event> {
        Some(Event::OutputBegin(pb::OutputBegin {
            name: "a.txt".into(),
            ..Default::default()
        }))
    }

    fn step(id: &str, state: &str) -> Option<Event> {
        Some(Event::StepRequired(pb::StepRequired {
            step_id: id.into(),
            inputs: Vec::new(),
            state: state.into(),
        }))
    }

    #[test]
    fn an_output_is_numbered_after_the_tasks_outputs_and_typed_by_default() {
        let mut rules = rules();
        let Action::BeginOutput(record) = rules.on_event(begin()) else {
            panic!("not an output");
        };
        assert_eq!(record.position, 2);
        assert_eq!(record.content_type, "application/octet-stream");
        assert_eq!(
            rules.on_event(chunk(b"abcd")),
            Action::Write(bytes::Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            rules.on_event(Some(Event::OutputEnd(pb::OutputEnd {}))),
            Action::EndOutput
        );
        assert_eq!(rules.outputs, 3);
    }

    #[test]
    fn outputs_out_of_order_or_too_large_fail_the_task() {
        let mut rules = rules();
        assert_eq!(
            rules.on_event(chunk(b"x")),
            Action::Fail("plugin p@v1 sent output bytes outside an output".into())
        );
        rules.on_event(begin());
        assert_eq!(
            rules.on_event(begin()),
            Action::Fail("plugin p@v1 began an output before ending the previous one".into())
        );
        assert_eq!(
            rules.on_event(chunk(b"12345")),
            Action::Fail("plugin p@v1 sent an output larger than the limit of 4 bytes".into())
        );
        assert_eq!(
            rules.on_event(Some(Event::Result(pb::TaskResult {}))),
            Action::Fail("plugin p@v1 finished with an output still open".into())
        );
    }

    #[test]
    fn a_step_needs_a_plain_id_json_state_and_no_open_output() {
        let mut rules = rules();
        assert_eq!(
            rules.on_event(step("a/b", "{}")),
            Action::Fail("plugin p@v1 asked for a step with an invalid id".into())
        );
        assert_eq!(
            rules.on_event(step("next", "{not json")),
            Action::Fail("plugin p@v1 asked for a step whose state is not JSON".into())
        );
        let huge = format!("\"{}\"", "x".repeat(corral_proto::MAX_STATE_BYTES));
        assert!(matches!(
            rules.on_event(step("next", &huge)),
            Action::Fail(_)
        ));
        assert_eq!(
            rules.on_event(step("class-1", "{\"n\":1}")),
            Action::Wait {
                step_id: "class-1".into(),
                form: Vec::new(),
                state: "{\"n\":1}".into()
            }
        );
        rules.on_event(begin());
        assert_eq!(
            rules.on_event(step("next", "null")),
            Action::Fail("plugin p@v1 asked for a step with an output still open".into())
        );
    }

    #[test]
    fn a_checkpoint_must_be_json_and_an_empty_event_is_a_breach() {
        let mut rules = rules();
        let checkpoint = |state: &str| {
            Some(Event::Checkpoint(pb::Checkpoint {
                state: state.into(),
            }))
        };
        assert_eq!(
            rules.on_event(checkpoint("[1,2]")),
            Action::Checkpoint("[1,2]".into())
        );
        assert!(matches!(rules.on_event(checkpoint("")), Action::Fail(_)));
        assert_eq!(
            rules.on_event(None),
            Action::Fail("plugin p@v1 sent an empty event".into())
        );
    }

    #[test]
    fn long_log_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_LOG_LINE);
        let cut = cut(line);
        assert!(cut.ends_with(" [line cut]"));
        assert!(cut.len() <= MAX_LOG_LINE + " [line cut]".len());
    }

    #[test]
    fn stored_events_are_numbered_so_the_last_is_the_count() {
        let events = vec![
            TaskEvent::log("a").encode(),
            TaskEvent::status("SUCCESS").encode(),
        ];
        let ids: Vec<u64> = numbered(events, 7).map(|event| event.id).collect();
        assert_eq!(ids, [6, 7]);
    }

    #[test]
    fn a_stored_event_reads_back_as_the_event_it_was() {
        let encoded = TaskEvent::log("a \"quoted\" line\nand more").encode();
        let line = encoded.line();
        assert!(!line.contains('\n'), "one line: {line}");
        let TaskEvent::Log(read) =
            serde_json::from_str::<TaskEvent>(&line).expect("a stored line reads back")
        else {
            panic!("not a log line: {line}");
        };
        assert_eq!(read.text, "a \"quoted\" line\nand more");
    }
}

/// Property tests: a plugin speaking the event protocol as a hostile plugin
/// would (any bytes on the wire, any order of events) ends its call with an
/// action, never a panic, and never writes past the output limit.
#[cfg(test)]
mod properties {
    use corral_proto::plugin::v1 as pb;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    const LIMIT: u64 = 64;

    fn rules() -> CallRules {
        CallRules {
            task_id: "t".into(),
            identifier: "p@v1".into(),
            max_output_bytes: LIMIT,
            open: None,
            outputs: 0,
        }
    }

    fn event() -> impl Strategy<Value = Option<Event>> {
        prop_oneof![
            Just(None),
            "\\PC{0,20}".prop_map(|text| Some(Event::Log(pb::LogLine { text }))),
            (any::<i64>(), any::<i64>(), any::<i64>()).prop_map(|(value, start, target)| Some(
                Event::Progress(pb::Progress {
                    value,
                    start,
                    target,
                    unit: "%".into()
                })
            )),
            ("\\PC{0,8}", "\\PC{0,8}").prop_map(|(name, content_type)| Some(Event::OutputBegin(
                pb::OutputBegin {
                    name,
                    content_type,
                    ..Default::default()
                }
            ))),
            (0usize..48).prop_map(|size| Some(Event::OutputChunk(pb::OutputChunk {
                data: vec![1u8; size].into()
            }))),
            Just(Some(Event::OutputEnd(pb::OutputEnd {}))),
            ("\\PC{0,6}", "\\PC{0,12}").prop_map(|(step_id, state)| Some(Event::StepRequired(
                pb::StepRequired {
                    step_id,
                    inputs: Vec::new(),
                    state
                }
            ))),
            "\\PC{0,12}".prop_map(|state| Some(Event::Checkpoint(pb::Checkpoint { state }))),
            Just(Some(Event::Result(pb::TaskResult {}))),
            "\\PC{0,12}".prop_map(|message| Some(Event::Error(pb::TaskError { message }))),
        ]
    }

    /// Feeds events until one ends the call; checks the output limit on the way.
    fn run(events: impl IntoIterator<Item = Option<Event>>) -> Result<(), TestCaseError> {
        let mut rules = rules();
        let mut written = 0u64;
        for event in events {
            match rules.on_event(event) {
                Action::Write(bytes) => {
                    written += bytes.len() as u64;
                    prop_assert!(written <= LIMIT, "{written} bytes written past the limit");
                }
                Action::BeginOutput(_) => written = 0,
                Action::Succeed | Action::Fail(_) | Action::Wait { .. } => return Ok(()),
                Action::Log(_)
                | Action::Progress(_)
                | Action::EndOutput
                | Action::Checkpoint(_) => {}
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_order_of_events_ends_in_an_action(events in proptest::collection::vec(event(), 0..40)) {
            run(events)?;
        }

        #[test]
        fn any_bytes_on_the_wire_end_in_an_action(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)
        ) {
            let events = messages
                .iter()
                .filter_map(|bytes| pb::InvokeEvent::decode(bytes.as_slice()).ok())
                .map(|message| message.event);
            run(events)?;
        }
    }
}

//! Durable task state: one schema (`migrations/`) and one set of queries, run on
//! PostgreSQL in production and SQLite as the embedded default (sqlx `Any`).

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};

/// Past this many characters a task's log takes no more lines (the reason of a
/// failure always goes in).
pub const MAX_LOG_CHARS: usize = 4 * 1024 * 1024;

/// A task's lifecycle status, as the REST contract spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Not finished.
    Pending,
    /// Finished well.
    Success,
    /// Finished with an error.
    Failure,
}

impl TaskStatus {
    /// `PENDING`, `SUCCESS` or `FAILURE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "SUCCESS" => Some(Self::Success),
            "FAILURE" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// Progress as the plugin reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Current value.
    pub value: i64,
    /// Where it started.
    pub start: i64,
    /// Where it ends.
    pub target: i64,
    /// E.g. `%`.
    pub unit: String,
}

/// A step of a multi-step task.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// The plugin's id of the step, e.g. `demo-step`.
    pub step_id: String,
    /// The step's form fields, as JSON (see `forms`).
    pub form: String,
    /// Whether its input was submitted.
    pub cleared: bool,
}

/// A stored file: a task output or an uploaded input.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    /// Public id, part of the URL.
    pub id: String,
    /// The `file-id` query value that must accompany the id.
    pub secret: String,
    /// The task it belongs to.
    pub task_id: Option<String>,
    /// `output` or `input`.
    pub kind: FileKind,
    /// Order among the task's outputs.
    pub position: i64,
    /// File name, if any.
    pub name: Option<String>,
    /// QHAna data type.
    pub data_type: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Where the file store keeps it; empty when the bytes are `inline`.
    pub storage_key: String,
    /// The bytes of a small file, kept in its row (read only by [`Store::file`]).
    pub inline: Option<bytes::Bytes>,
}

/// What a stored file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Produced by a task.
    Output,
    /// Uploaded with a task's form.
    Input,
}

impl FileKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Input => "input",
        }
    }
}

/// A task with everything its status shows.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Unguessable id.
    pub id: String,
    /// The plugin identifier, e.g. `hello-world@v0-2-1`.
    pub plugin: String,
    /// See [`TaskStatus`]; `None` for a value no status names (shown as `UNKNOWN`).
    pub status: Option<TaskStatus>,
    /// The task log.
    pub log: String,
    /// Last progress.
    pub progress: Option<Progress>,
    /// How many times the task's current call was run.
    pub attempts: i64,
    /// Steps in order.
    pub steps: Vec<StepRecord>,
    /// Output files in order; read only once the task has finished.
    pub outputs: Vec<FileRecord>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, when finished.
    pub finished_at: Option<i64>,
    /// How many events its stream has stored (the last event's SSE id).
    pub event_count: i64,
}

/// A task this call ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The plugin identifier.
    pub plugin: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub finished_at: i64,
    /// How many events its stream holds now.
    pub event_count: i64,
}

/// What a call of a task needs: the task's inputs, the state the plugin handed
/// over last and, for a continuation, the step submitted and its values.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallRecord {
    /// The task id.
    pub id: String,
    /// The plugin identifier the task started on (its steps resume on it).
    pub plugin: String,
    /// The base URL its client used.
    pub base_url: String,
    /// Runs of the task's current call so far (the fence of its writes).
    pub attempts: i64,
    /// The task's validated inputs, as JSON.
    pub inputs: String,
    /// The state of the last step or checkpoint (JSON).
    pub state: Option<String>,
    /// How many outputs the task had when the state was saved.
    pub state_outputs: i64,
    /// The step the call continues, if it is a continuation.
    #[sqlx(default)]
    pub step_id: Option<String>,
    /// The step's submitted values, as JSON.
    #[sqlx(default)]
    pub step_inputs: Option<String>,
    /// How long the task's log is (its caps hold across calls).
    pub log_chars: i64,
    /// How long the task's stored event stream is.
    pub event_chars: i64,
}

/// One more run of a task's call.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    /// Runs of the call, this one included.
    pub attempts: i64,
    /// The state to continue from.
    pub state: Option<String>,
    /// How many outputs the task keeps.
    pub state_outputs: i64,
    /// The file-store keys of the outputs dropped (written after the state).
    #[sqlx(skip)]
    pub dropped_files: Vec<String>,
}

/// Unfinished tasks of one plugin identifier.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct UnfinishedTasks {
    /// The plugin identifier.
    pub plugin: String,
    /// Tasks waiting for a step.
    pub waiting: i64,
    /// Tasks whose call runs.
    pub running: i64,
}

/// A gateway's lease, for operators.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    /// The lease's id (one per start of a gateway).
    pub id: String,
    /// Its host and data directory.
    pub place: String,
    /// Its HTTP address.
    pub url: String,
    /// Unix milliseconds (the database's clock).
    pub started_at: i64,
    /// Unix milliseconds (the database's clock).
    pub expires_at: i64,
    /// 1 while the lease is live.
    pub live: i64,
    /// Running calls it owns.
    pub running: i64,
}

/// A webhook notice waiting for delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notice {
    /// The subscriber.
    pub webhook_href: String,
    /// Its order among the subscriber's notices.
    pub position: i64,
    /// The task.
    pub task_id: String,
    /// The task's absolute URL (the notice's `source`).
    pub task_url: String,
    /// `status`, `steps` or `details`.
    pub event: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Where a change's webhook notices go: the task's URL (their `source`), and
/// the webhook events the change causes.
#[derive(Debug, Clone, Copy)]
pub struct Notices<'a> {
    /// The task's absolute URL.
    pub task_url: &'a str,
    /// The events, in order, e.g. `["status", "details"]`.
    pub events: &'a [&'static str],
}

/// The columns a [`Batch`] sets, with [`Batch::update`]'s parameters.
const BATCH_COLUMNS: &str = "log = CASE WHEN $2 = '' THEN log WHEN log = '' THEN $2 ELSE log || $3 END, \
         progress_value = COALESCE($4, progress_value), \
         progress_start = COALESCE($5, progress_start), \
         progress_target = COALESCE($6, progress_target), \
         progress_unit = COALESCE($7, progress_unit), updated_at = $8, \
         events = events || $9, event_count = event_count + $10, \
         state = COALESCE($11, state), state_outputs = COALESCE($12, state_outputs), \
         host = COALESCE($15, host)";

/// The condition every write of a running task adds: the task is the
/// fence's (owner $13, attempt $14, or any attempt when $14 is negative) and
/// the owner's lease is live by the database's clock (`{now}`).
const FENCED: &str = "owner = $13 AND ($14 < 0 OR attempts = $14) AND EXISTS \
                      (SELECT 1 FROM gateways g WHERE g.id = $13 AND g.expires_at > {now})";

/// The attempt of [`Fence::operator`]: only an end carries it (see
/// `Statements::cancel`), which then applies to any unfinished task.
const OPERATOR: i64 = -2;

/// Who may write a running task: the gateway whose lease runs its call, and
/// which run of the call (negative: any, for an end from outside the call).
#[derive(Debug, Clone)]
pub struct Fence {
    /// The lease's id (a random id per gateway start).
    pub owner: Arc<str>,
    /// The task's `attempts` when the call began its run.
    pub attempt: i64,
}

impl Fence {
    /// An operator's: ends any unfinished task, running or waiting, whoever
    /// runs it (the end statement `cancel`, not the fenced ones).
    pub fn operator() -> Self {
        Self {
            owner: "".into(),
            attempt: OPERATOR,
        }
    }
}

/// The statements that depend on the database's dialect: its clock, and the
/// fenced writes of running tasks.
#[derive(Debug)]
struct Statements {
    /// The database's clock in Unix milliseconds, an SQL expression.
    now: &'static str,
    write: String,
    wait: String,
    end: String,
    /// An operator's end ([`Fence::operator`]): any unfinished task.
    cancel: String,
    begin_attempt: String,
    /// A new task, inserted only while its owner's lease is live.
    create: String,
    /// Whether anything is to adopt: a read, so the look every second takes
    /// no write lock when nothing is (SQLite has one writer).
    orphans: String,
    adopt: String,
}

impl Statements {
    fn new(postgres: bool) -> Self {
        let now = if postgres {
            "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
        } else {
            "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        };
        let fence = FENCED.replace("{now}", now);
        // Rows are claimed one by one on PostgreSQL; SQLite has one writer.
        let skip_locked = if postgres {
            "FOR UPDATE OF t SKIP LOCKED"
        } else {
            ""
        };
        Self {
            now,
            write: format!(
                "UPDATE tasks SET {BATCH_COLUMNS} WHERE id = $1 AND status = 'PENDING' \
                 AND {fence} RETURNING event_count"
            ),
            // The task waits: it belongs to no gateway until its step is submitted.
            wait: format!(
                "UPDATE tasks SET owner = NULL, {BATCH_COLUMNS} WHERE id = $1 \
                 AND status = 'PENDING' AND {fence} RETURNING event_count"
            ),
            // A task waiting for a step has no call that could end it: an end
            // racing the step's commit (a shutdown's) leaves it waiting. Only
            // an operator ends a waiting task.
            end: format!(
                "UPDATE tasks SET status = $16, finished_at = $8, {BATCH_COLUMNS} \
                 WHERE id = $1 AND status = 'PENDING' AND {fence} AND NOT EXISTS \
                 (SELECT 1 FROM task_steps w WHERE w.task_id = $1 AND w.cleared = 0) \
                 RETURNING plugin, created_at, event_count"
            ),
            // Running or waiting, whoever runs it; only with the operator's fence.
            cancel: format!(
                "UPDATE tasks SET status = $16, finished_at = $8, {BATCH_COLUMNS} \
                 WHERE id = $1 AND status = 'PENDING' AND $13 = '' AND $14 = {OPERATOR} \
                 RETURNING plugin, created_at, event_count"
            ),
            create: format!(
                "INSERT INTO tasks (id, plugin, status, log, inputs, base_url, attempts, \
                 created_at, updated_at, owner, retry_of) \
                 SELECT $1, $2, 'PENDING', '', $3, $4, 1, $5, $5, $6, $7 \
                 WHERE EXISTS (SELECT 1 FROM gateways g WHERE g.id = $6 AND g.expires_at > {now})"
            ),
            begin_attempt: format!(
                "UPDATE tasks SET attempts = attempts + 1, updated_at = $2 \
                 WHERE id = $1 AND status = 'PENDING' AND {} \
                 RETURNING attempts, state, state_outputs",
                fence.replace("$13", "$3").replace("$14", "$4")
            ),
            orphans: format!(
                "SELECT 1 AS found FROM tasks t WHERE t.status = 'PENDING' \
                 AND (t.owner IS NULL OR NOT EXISTS \
                   (SELECT 1 FROM gateways g WHERE g.id = t.owner AND g.expires_at > {now})) \
                 AND NOT EXISTS (SELECT 1 FROM task_steps w WHERE w.task_id = t.id AND w.cleared = 0) \
                 LIMIT 1"
            ),
            // The running calls of gateways whose lease expired (or of none),
            // oldest first, taken by a live lease in one statement.
            adopt: format!(
                "WITH orphans AS (SELECT t.id FROM tasks t WHERE t.status = 'PENDING' \
                 AND NOT EXISTS (SELECT 1 FROM task_steps w WHERE w.task_id = t.id AND w.cleared = 0) \
                 AND (t.owner IS NULL OR NOT EXISTS \
                   (SELECT 1 FROM gateways g WHERE g.id = t.owner AND g.expires_at > {now})) \
                 ORDER BY t.created_at LIMIT $3 {skip_locked}) \
                 UPDATE tasks SET owner = $1, updated_at = $2 FROM orphans \
                 WHERE tasks.id = orphans.id AND EXISTS \
                   (SELECT 1 FROM gateways g WHERE g.id = $1 AND g.expires_at > {now}) \
                 RETURNING tasks.id"
            ),
        }
    }
}

/// How many parameters [`Batch::update`] binds.
const BATCH_VALUES: usize = 15;
/// The first parameter of the file rows of [`end_in_one_statement`]: after
/// the batch's, the status, the task URL and the notices' position.
const FIRST_FILE_PARAMETER: usize = BATCH_VALUES + 4;
/// Above this many outputs a task's end is a transaction of statements (a
/// statement takes at most 65,535 parameters).
const OUTPUTS_IN_ONE_STATEMENT: usize = 64;

/// Events of a running task not yet written: the runner collects them and the
/// store writes them together (see `tasks.md`).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// New log lines, each ended by `\n` but the last.
    pub log: String,
    /// The latest progress.
    pub progress: Option<Progress>,
    /// Finished output files (their bytes are durable already).
    pub outputs: Vec<FileRecord>,
    /// The events of the task's stream, one JSON object per line, each line
    /// ended by `\n`.
    pub events: String,
    /// How many lines `events` holds.
    pub event_count: i64,
    /// A new state to continue from, and the task's output count with it.
    pub state: Option<(String, i64)>,
    /// The plugin host the call runs on (its supervisor's URL), written with
    /// the call's first batch.
    pub host: Option<Arc<str>>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
            && self.progress.is_none()
            && self.outputs.is_empty()
            && self.events.is_empty()
            && self.state.is_none()
    }

    /// Adds an event of the task's stream (one line of JSON).
    pub fn event(&mut self, json: &str) {
        self.events.push_str(json);
        self.events.push('\n');
        self.event_count += 1;
    }

    /// Adds a log line.
    pub fn log_line(&mut self, line: &str) {
        if !self.log.is_empty() {
            self.log.push('\n');
        }
        self.log.push_str(line);
    }

    /// `sql` with its parameters bound: $1 the id, $2 the new log lines, $3
    /// the same after a line end, $4 to $7 the progress (NULL: unchanged), $8
    /// the time, $9 and $10 the events and their count, $11 and $12 the state
    /// and its output count (NULL: unchanged), $13 and $14 the fence, $15
    /// the host (NULL: unchanged).
    fn update<'q>(
        &'q self,
        sql: impl sqlx::SqlSafeStr,
        id: &'q str,
        fence: &'q Fence,
        now: i64,
    ) -> Query<'q> {
        let after_line_end = if self.log.is_empty() {
            String::new()
        } else {
            format!("\n{}", self.log)
        };
        let progress = self.progress.as_ref();
        let state = self.state.as_ref();
        sqlx::query(sql)
            .bind(id)
            .bind(self.log.as_str())
            .bind(after_line_end)
            .bind(progress.map(|progress| progress.value))
            .bind(progress.map(|progress| progress.start))
            .bind(progress.map(|progress| progress.target))
            .bind(progress.map(|progress| progress.unit.clone()))
            .bind(now)
            .bind(self.events.as_str())
            .bind(self.event_count)
            .bind(state.map(|(state, _)| state.as_str()))
            .bind(state.map(|(_, outputs)| *outputs))
            .bind(&*fence.owner)
            .bind(fence.attempt)
            .bind(self.host.as_deref())
    }
}

/// A task to insert ([`Store::create_task`]).
#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    pub id: &'a str,
    /// Its plugin's identifier.
    pub plugin: &'a str,
    /// Its checked inputs, JSON.
    pub inputs: &'a str,
    /// The base of its URLs.
    pub base_url: &'a str,
    /// The files uploaded with it.
    pub uploads: &'a [String],
    /// The lease of the gateway that runs its first call.
    pub owner: &'a str,
    /// The task it retries.
    pub retry_of: Option<&'a str>,
}

/// One line of an operator's task listing.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// The task id.
    pub id: String,
    /// The plugin identifier.
    pub plugin: String,
    /// `PENDING`, `SUCCESS` or `FAILURE`.
    pub status: String,
    /// Of a `PENDING` task: `running` (a call runs) or `waiting` (for a step).
    pub phase: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
    /// Unix milliseconds, when finished.
    pub finished_at: Option<i64>,
    /// Runs of the task's calls so far.
    pub attempts: i64,
    /// The task this one retries.
    pub retry_of: Option<String>,
    /// The plugin host (supervisor URL) its last call ran on.
    pub host: Option<String>,
    /// The lease of the gateway running its call (`NULL` while it waits).
    #[serde(skip)]
    pub owner: Option<String>,
    /// The origin (and proxy prefix) its URLs were made with.
    #[serde(skip)]
    pub base_url: String,
}

/// Which tasks an operator lists; newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// One plugin identifier.
    pub plugin: Option<String>,
    pub status: Option<StatusFilter>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created before (Unix ms).
    pub until: Option<i64>,
    /// Only tasks listed after this one (created at, id): the next page.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// A status filter: the contract's three, or a `PENDING` task's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Pending,
    Running,
    Waiting,
    Success,
    Failure,
}

impl std::str::FromStr for StatusFilter {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        Ok(match text.to_ascii_uppercase().as_str() {
            "PENDING" => Self::Pending,
            "RUNNING" => Self::Running,
            "WAITING" => Self::Waiting,
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            _ => return Err(()),
        })
    }
}

/// The columns of a [`TaskSummary`], from `tasks t`.
const SUMMARY_COLUMNS: &str = "t.id, t.plugin, t.status, t.created_at, t.updated_at, \
     t.finished_at, t.attempts, t.retry_of, t.host, t.owner, t.base_url, \
     CASE WHEN t.status <> 'PENDING' THEN NULL WHEN EXISTS \
       (SELECT 1 FROM task_steps w WHERE w.task_id = t.id AND w.cleared = 0) \
     THEN 'waiting' ELSE 'running' END AS phase";

/// A waiting task's condition, on `tasks t`.
const WAITS: &str = "EXISTS (SELECT 1 FROM task_steps w WHERE w.task_id = t.id AND w.cleared = 0)";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a database we do not support.
    #[error("unsupported database URL `{0}`: expected postgres://… or sqlite:…")]
    UnsupportedUrl(String),
    /// The database did not answer a read in time (a cut or stalled link).
    #[error("the database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The gateway's lease ended: it takes no task until it holds a new one.
    #[error("the gateway's lease has ended; it is joining again")]
    NoLease,
    /// A second gateway on an SQLite database.
    #[error(
        "another gateway ({0}) is using this SQLite database; several gateways need PostgreSQL \
         (--database-url postgres://…)"
    )]
    Occupied(String),
}

impl StoreError {
    /// Whether the database is down, unreachable, restarting or too slow: the
    /// request may succeed later (a 503), as opposed to a query that is wrong.
    pub fn is_unavailable(&self) -> bool {
        let error = match self {
            Self::Database(error) => error,
            Self::TimedOut(_) | Self::NoLease => return true,
            Self::Migrate(_) | Self::UnsupportedUrl(_) | Self::Occupied(_) => return false,
        };
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => true,
            // PostgreSQL: 08 connection exceptions, 57P01–57P05 (shut down,
            // crashed, cannot connect now, idle timeout), 57014 (statement
            // timeout), 53300 (too many connections). SQLite: 5 (busy), 6 (locked).
            sqlx::Error::Database(error) => error.code().is_some_and(|code| {
                // SQLite's extended codes keep the primary one in the low byte.
                let sqlite_busy_or_locked = code
                    .parse::<u32>()
                    .is_ok_and(|number| matches!(number & 0xff, 5 | 6));
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(&*code, "57014" | "53300")
                    || sqlite_busy_or_locked
            }),
            _ => false,
        }
    }
}

/// How long a request waits for a pooled connection before it is answered 503:
/// an outage shows within about this long, never as a hang.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The longest a PostgreSQL statement may run (every query here is short).
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = 5000";

/// The row an auto-committed `UPDATE … RETURNING` returns, once the database
/// has confirmed the commit. (`fetch_optional` of sqlx's `Any` driver returns
/// at the first row, before PostgreSQL's confirmation: a server that stops at
/// that moment rolls the change back although it was reported done.)
async fn committed_row(statement: Query<'_>, pool: &AnyPool) -> Result<Option<AnyRow>, StoreError> {
    Ok(statement.fetch_all(pool).await?.into_iter().next())
}

/// How long a read may take: a link that was cut without a reset (or a stalled
/// server) answers 503 after this, not after TCP's own timeouts.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a read within [`READ_TIMEOUT`], once more when its connection turned
/// out to be broken (the database restarted since it was pooled): a read
/// changes nothing, so trying it again is safe.
async fn read_retrying<T, F, Fut>(read: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let bounded = || async {
        tokio::time::timeout(READ_TIMEOUT, read())
            .await
            .unwrap_or(Err(StoreError::TimedOut(READ_TIMEOUT)))
    };
    match bounded().await {
        // A broken connection is worth a second try; no connection in time,
        // or no answer in time, is the outage itself.
        Err(error)
            if error.is_unavailable()
                && !matches!(
                    error,
                    StoreError::TimedOut(_) | StoreError::Database(sqlx::Error::PoolTimedOut)
                ) =>
        {
            tracing::debug!(%error, "a read failed on its connection; trying once more");
            bounded().await
        }
        other => other,
    }
}

/// The task store: a connection pool over PostgreSQL or SQLite, and a bounded
/// cache of finished tasks (a finished task never changes: every write to a
/// task's row, steps or outputs requires it `PENDING`).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// A small pool of its own for the gateway's lease.
    control: AnyPool,
    /// PostgreSQL (else SQLite): a task's end is one statement there.
    postgres: bool,
    sql: Arc<Statements>,
    finished: Arc<FinishedTasks>,
    /// Woken after a commit that wrote webhook notices (the outbox's dispatcher
    /// waits on it).
    outbox: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Finished tasks by id, at most [`FINISHED_CACHE_BYTES`] of them (roughly).
type FinishedTasks = quick_cache::sync::Cache<String, Arc<TaskRecord>, RecordWeight>;

/// How much memory the finished-task cache may take, roughly.
const FINISHED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// A cached task's weight: about the bytes it holds.
#[derive(Debug, Clone, Copy)]
struct RecordWeight;

impl quick_cache::Weighter<String, Arc<TaskRecord>> for RecordWeight {
    fn weight(&self, _id: &String, task: &Arc<TaskRecord>) -> u64 {
        let steps: usize = task.steps.iter().map(|step| step.form.len() + 64).sum();
        (256 + task.log.len() + steps + task.outputs.len() * 256) as u64
    }
}

/// The options of a pool of at most `connections`: bounded waits, and each
/// engine's session settings.
fn pool_options(sqlite: bool, connections: u32) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before each use: a broken connection fails its query (a
        // read is tried once more, see `read_retrying`).
        .test_before_acquire(false);
    if sqlite {
        return options.after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::raw_sql(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                )
                .execute(connection)
                .await?;
                Ok(())
            })
        });
    }
    options.after_connect(|connection, _| {
        Box::pin(async move {
            sqlx::raw_sql(STATEMENT_TIMEOUT).execute(connection).await?;
            Ok(())
        })
    })
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        }
        let pool = pool_options(sqlite, if sqlite { 4 } else { 16 })
            .connect(url)
            .await?;
        // The lease's own connections: a busy pool never starves its renewal.
        let control = pool_options(sqlite, 2).connect(url).await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self {
            pool,
            control,
            postgres: !sqlite,
            sql: Arc::new(Statements::new(!sqlite)),
            outbox: Arc::default(),
            finished: Arc::new(quick_cache::sync::Cache::with_weighter(
                16 * 1024,
                FINISHED_CACHE_BYTES,
                RecordWeight,
            )),
        })
    }

    /// Takes a lease for a gateway at `place` (host and data directory),
    /// reached at `url`, for `ttl` milliseconds. At a start (`starting`) it
    /// ends the lease of an earlier start at the same place, whose calls are
    /// then adopted at once; a gateway joining again after losing its lease
    /// leaves the others alone. On SQLite it refuses when another gateway's
    /// lease is live.
    pub async fn begin_lease(
        &self,
        id: &str,
        place: &str,
        url: &str,
        ttl: i64,
        starting: bool,
    ) -> Result<(), StoreError> {
        let now = self.sql.now;
        let mut transaction = self.control.begin().await?;
        // On SQLite this first write also takes the database's write lock, so
        // two gateways starting at once cannot both see none live.
        if starting {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE gateways SET expires_at = {now} WHERE place = $1 AND expires_at > {now}"
            )))
            .bind(place)
            .execute(&mut *transaction)
            .await?;
        }
        if !self.postgres {
            let other = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT url FROM gateways WHERE expires_at > {now} LIMIT 1"
            )))
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(other) = other {
                return Err(StoreError::Occupied(other.try_get("url")?));
            }
        }
        // Leases of a day ago whose tasks were all adopted are history.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM gateways WHERE expires_at < {now} - 86400000 AND NOT EXISTS \
             (SELECT 1 FROM tasks t WHERE t.owner = gateways.id AND t.status = 'PENDING')"
        )))
        .execute(&mut *transaction)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO gateways (id, place, url, started_at, expires_at) \
             VALUES ($1, $2, $3, {now}, {now} + $4)"
        )))
        .bind(id)
        .bind(place)
        .bind(url)
        .bind(ttl)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Extends a live lease by `ttl` milliseconds from now (the database's
    /// clock); false when it had expired (it can never be renewed then).
    pub async fn renew_lease(&self, id: &str, ttl: i64) -> Result<bool, StoreError> {
        let now = self.sql.now;
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE gateways SET expires_at = {now} + $2 WHERE id = $1 AND expires_at > {now}"
        )))
        .bind(id)
        .bind(ttl)
        .execute(&self.control)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Ends a lease now (a gateway that stops): what it still owned is adopted.
    pub async fn end_lease(&self, id: &str) -> Result<(), StoreError> {
        let now = self.sql.now;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE gateways SET expires_at = {now} WHERE id = $1 AND expires_at > {now}"
        )))
        .bind(id)
        .execute(&self.control)
        .await?;
        Ok(())
    }

    /// The gateways with a live lease, or one that expired in the last
    /// minute, with how many running calls each owns.
    pub async fn gateways(&self) -> Result<Vec<GatewayRecord>, StoreError> {
        let now = self.sql.now;
        let gateways = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT g.id, g.place, g.url, g.started_at, g.expires_at, \
             CAST(CASE WHEN g.expires_at > {now} THEN 1 ELSE 0 END AS BIGINT) AS live, \
             (SELECT COUNT(*) FROM tasks t WHERE t.owner = g.id AND t.status = 'PENDING') \
               AS running FROM gateways g WHERE g.expires_at > {now} - 60000 \
             ORDER BY g.started_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(gateways)
    }

    /// Whether the database is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        read_retrying(|| async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Inserts a new `PENDING` task, its first attempt counted and run by the
    /// gateway of lease `owner` (a retry of task `retry_of`, when given), and
    /// attaches the files uploaded with it, in one transaction; committed when
    /// this returns.
    pub async fn create_task(&self, task: &NewTask<'_>) -> Result<(), StoreError> {
        let NewTask {
            id,
            plugin,
            inputs,
            base_url,
            uploads,
            owner,
            retry_of,
        } = *task;
        let insert = sqlx::query(sqlx::AssertSqlSafe(&*self.sql.create))
            .bind(id)
            .bind(plugin)
            .bind(inputs)
            .bind(base_url)
            .bind(now_millis())
            .bind(owner)
            .bind(retry_of);
        if uploads.is_empty() {
            // One statement: no transaction round trips on the common path.
            return match insert.execute(&self.pool).await?.rows_affected() {
                0 => Err(StoreError::NoLease),
                _ => Ok(()),
            };
        }
        let mut transaction = self.pool.begin().await?;
        if insert.execute(&mut *transaction).await?.rows_affected() == 0 {
            return Err(StoreError::NoLease);
        }
        for upload in uploads {
            sqlx::query("UPDATE files SET task_id = $1 WHERE id = $2 AND kind = 'input'")
                .bind(id)
                .bind(upload)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Records a stored file (an upload, before its task exists).
    pub async fn insert_file(&self, file: &FileRecord) -> Result<(), StoreError> {
        insert_file(file).execute(&self.pool).await?;
        Ok(())
    }

    /// Forgets uploaded files that no task took (their bytes are the caller's).
    pub async fn delete_unattached_file(&self, file_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM files WHERE id = $1 AND task_id IS NULL")
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The task with its steps and outputs; a finished one from the cache.
    pub async fn task(&self, id: &str) -> Result<Option<Arc<TaskRecord>>, StoreError> {
        if let Some(task) = self.finished.get(id) {
            return Ok(Some(task));
        }
        read_retrying(|| self.read_task(id)).await
    }

    async fn read_task(&self, id: &str) -> Result<Option<Arc<TaskRecord>>, StoreError> {
        // The row and its steps in one query (a row per step; a task has few);
        // outputs only show once the task has finished (the contract's
        // `outputs` is `[]` before), so only then.
        let rows = sqlx::query(
            "SELECT t.id, t.plugin, t.status, t.log, t.progress_value, t.progress_start, \
             t.progress_target, t.progress_unit, t.attempts, t.created_at, t.finished_at, \
             t.event_count, s.step_id, s.form, s.cleared FROM tasks t \
             LEFT JOIN task_steps s ON s.task_id = t.id WHERE t.id = $1 ORDER BY s.position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let finished_at: Option<i64> = row.try_get("finished_at")?;
        let outputs = if finished_at.is_some() {
            sqlx::query(
                "SELECT id, secret, task_id, kind, position, name, data_type, content_type, size, \
                 storage_key FROM files WHERE task_id = $1 AND kind = 'output' ORDER BY position",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        let mut steps = Vec::new();
        for step in &rows {
            let Some(step_id) = step.try_get::<Option<String>, _>("step_id")? else {
                continue;
            };
            steps.push(StepRecord {
                step_id,
                form: step.try_get("form")?,
                cleared: step.try_get::<i64, _>("cleared")? != 0,
            });
        }
        let outputs = outputs
            .iter()
            .map(file_record)
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let progress = match row.try_get::<Option<i64>, _>("progress_value")? {
            Some(value) => Some(Progress {
                value,
                start: row
                    .try_get::<Option<i64>, _>("progress_start")?
                    .unwrap_or(0),
                target: row
                    .try_get::<Option<i64>, _>("progress_target")?
                    .unwrap_or(100),
                unit: row
                    .try_get::<Option<String>, _>("progress_unit")?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        let task = Arc::new(TaskRecord {
            id: row.try_get("id")?,
            plugin: row.try_get("plugin")?,
            status: TaskStatus::parse(&row.try_get::<String, _>("status")?),
            log: row.try_get("log")?,
            progress,
            attempts: row.try_get("attempts")?,
            steps,
            outputs,
            created_at: row.try_get("created_at")?,
            finished_at,
            event_count: row.try_get("event_count")?,
        });
        if task.finished_at.is_some() {
            self.finished.insert(id.to_owned(), task.clone());
        }
        Ok(Some(task))
    }

    /// Counts one more run of the task's current call, which continues from
    /// the last state saved: the outputs written after it are dropped. `None`:
    /// the task has ended meanwhile, or is not the fence's any more.
    pub async fn begin_attempt(
        &self,
        id: &str,
        fence: &Fence,
    ) -> Result<Option<Attempt>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let attempt: Option<Attempt> =
            sqlx::query_as(sqlx::AssertSqlSafe(&*self.sql.begin_attempt))
                .bind(id)
                .bind(now_millis())
                .bind(&*fence.owner)
                .bind(fence.attempt)
                .fetch_optional(&mut *transaction)
                .await?;
        let Some(mut attempt) = attempt else {
            return Ok(None);
        };
        let dropped = sqlx::query(
            "DELETE FROM files WHERE task_id = $1 AND kind = 'output' AND position >= $2 \
             RETURNING storage_key",
        )
        .bind(id)
        .bind(attempt.state_outputs)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        for row in dropped {
            let key: String = row.try_get("storage_key")?;
            if !key.is_empty() {
                attempt.dropped_files.push(key);
            }
        }
        Ok(Some(attempt))
    }

    /// The task waits for a step: its running call's last events (with the
    /// step's), the state to continue from, the step, and the notices of the
    /// change, in one transaction. Returns the task's event count, or `None`
    /// when the task had ended.
    pub async fn wait_for_step(
        &self,
        id: &str,
        fence: &Fence,
        step_id: &str,
        form: &str,
        batch: &Batch,
        notices: Notices<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        let update = batch.update(sqlx::AssertSqlSafe(&*self.sql.wait), id, fence, now);
        let Some(row) = update.fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        for output in &batch.outputs {
            insert_file(output).execute(&mut *transaction).await?;
        }
        sqlx::query(
            "INSERT INTO task_steps (task_id, position, step_id, form, cleared) \
             SELECT $1, COUNT(*), $2, $3, 0 FROM task_steps WHERE task_id = $1",
        )
        .bind(id)
        .bind(step_id)
        .bind(form)
        .execute(&mut *transaction)
        .await?;
        self.commit_with_notices(transaction, id, notices, now)
            .await?;
        Ok(Some(row.try_get("event_count")?))
    }

    /// Marks the task's uncleared step `step_id` submitted with `inputs`
    /// (JSON), starts a new call (its first attempt, run by the gateway of
    /// lease `owner`) and writes the change's notices, in one transaction.
    /// Returns what the continuing call needs; `None` when no such step waits
    /// (already submitted, or the task ended).
    pub async fn clear_step(
        &self,
        id: &str,
        step_id: &str,
        inputs: &str,
        owner: &str,
        notices: Notices<'_>,
    ) -> Result<Option<CallRecord>, StoreError> {
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        let cleared = sqlx::query(
            "UPDATE task_steps SET cleared = 1, inputs = $3 \
             WHERE task_id = $1 AND step_id = $2 AND cleared = 0 \
             AND EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = 'PENDING')",
        )
        .bind(id)
        .bind(step_id)
        .bind(inputs)
        .execute(&mut *transaction)
        .await?;
        if cleared.rows_affected() == 0 {
            return Ok(None);
        }
        // Taken only under a live lease (else nothing changes: 503).
        let now_sql = self.sql.now;
        let call: Option<CallRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET attempts = 1, updated_at = $2, owner = $3 WHERE id = $1 \
             AND status = 'PENDING' \
             AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $3 AND g.expires_at > {now_sql}) \
             RETURNING id, plugin, base_url, attempts, inputs, state, state_outputs, \
             LENGTH(log) AS log_chars, LENGTH(events) AS event_chars"
        )))
        .bind(id)
        .bind(now)
        .bind(owner)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(mut call) = call else {
            // An operator ended it since the step was taken (the transaction
            // is rolled back), or this gateway has no live lease.
            let unfinished =
                sqlx::query("SELECT 1 AS found FROM tasks WHERE id = $1 AND status = 'PENDING'")
                    .bind(id)
                    .fetch_optional(&mut *transaction)
                    .await?;
            return match unfinished {
                Some(_) => Err(StoreError::NoLease),
                None => Ok(None),
            };
        };
        self.commit_with_notices(transaction, id, notices, now)
            .await?;
        call.step_id = Some(step_id.to_owned());
        call.step_inputs = Some(inputs.to_owned());
        Ok(Some(call))
    }

    /// Undoes [`Store::clear_step`] when its continuation could not start (the
    /// gateway began shutting down): the step waits again, unless the task is
    /// no longer `owner`'s (another gateway adopted the continuation).
    pub async fn reopen_step(
        &self,
        id: &str,
        step_id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let now = self.sql.now;
        let mut transaction = self.pool.begin().await?;
        let released = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET owner = NULL WHERE id = $1 AND status = 'PENDING' AND owner = $2 \
             AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $2 AND g.expires_at > {now})"
        )))
        .bind(id)
        .bind(owner)
        .execute(&mut *transaction)
        .await?;
        if released.rows_affected() == 0 {
            return Ok(());
        }
        sqlx::query(
            "UPDATE task_steps SET cleared = 0, inputs = NULL \
             WHERE task_id = $1 AND step_id = $2 AND cleared = 1 AND position = \
             (SELECT MAX(position) FROM task_steps WHERE task_id = $1)",
        )
        .bind(id)
        .bind(step_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Writes a running task's batched events: its output rows and, in the same
    /// transaction, its new log lines, progress, stream events and state.
    /// Returns the task's event count after them; `None` (nothing written)
    /// when the task already ended or is not the fence's any more.
    pub async fn write(
        &self,
        id: &str,
        fence: &Fence,
        batch: &Batch,
    ) -> Result<Option<i64>, StoreError> {
        let update = batch.update(
            sqlx::AssertSqlSafe(&*self.sql.write),
            id,
            fence,
            now_millis(),
        );
        if batch.outputs.is_empty() {
            let row = committed_row(update, &self.pool).await?;
            return Ok(row.map(|row| row.try_get("event_count")).transpose()?);
        }
        let mut transaction = self.pool.begin().await?;
        let Some(row) = update.fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        for output in &batch.outputs {
            insert_file(output).execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(Some(row.try_get("event_count")?))
    }

    /// Ends a task: its status, its last batched events (the reason of a
    /// failure among its log lines, the `status` event last) and its notices,
    /// in one transaction. A task that already ended (or is not the fence's
    /// any more) is left as it is; returns the task when this call ended it.
    pub async fn finish(
        &self,
        id: &str,
        fence: &Fence,
        status: TaskStatus,
        batch: &Batch,
        notices: Notices<'_>,
    ) -> Result<Option<Finished>, StoreError> {
        let now = now_millis();
        let finished = |row: AnyRow| -> Result<Finished, StoreError> {
            Ok(Finished {
                plugin: row.try_get("plugin")?,
                created_at: row.try_get("created_at")?,
                finished_at: now,
                event_count: row.try_get("event_count")?,
            })
        };
        if self.postgres && batch.outputs.len() <= OUTPUTS_IN_ONE_STATEMENT {
            // One statement, one round trip: the outputs and notices are
            // inserted only if the update ended the task.
            let sql = end_in_one_statement(self.end_for(fence), batch.outputs.len(), notices);
            let mut update = batch
                .update(sqlx::AssertSqlSafe(sql), id, fence, now)
                .bind(status.as_str())
                .bind(notices.task_url)
                .bind(notice_position(notices.events.len()));
            for output in &batch.outputs {
                update = bind_file(update, output);
            }
            let row = committed_row(update, &self.pool).await?;
            if let Some(row) = &row {
                self.committed_notices(row.try_get::<i64, _>("notices")?.unsigned_abs());
            }
            return row.map(finished).transpose();
        }
        let mut transaction = self.pool.begin().await?;
        let update = batch
            .update(sqlx::AssertSqlSafe(self.end_for(fence)), id, fence, now)
            .bind(status.as_str());
        let Some(row) = update.fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        for output in &batch.outputs {
            insert_file(output).execute(&mut *transaction).await?;
        }
        self.commit_with_notices(transaction, id, notices, now)
            .await?;
        finished(row).map(Some)
    }

    /// The statement that ends a task under `fence`: a call's, or an operator's.
    fn end_for(&self, fence: &Fence) -> &str {
        if fence.attempt == OPERATOR {
            &self.sql.cancel
        } else {
            &self.sql.end
        }
    }

    /// Adopts up to `limit` calls whose gateway's lease expired (it died, or
    /// lost its link): they become lease `owner`'s, in one statement that
    /// another gateway adopting at the same time skips. Returns what each call
    /// needs to run again (its `attempts` is the fence of the next run).
    pub async fn adopt(&self, owner: &str, limit: i64) -> Result<Vec<CallRecord>, StoreError> {
        let any = sqlx::query(sqlx::AssertSqlSafe(&*self.sql.orphans))
            .fetch_optional(&self.pool)
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(&*self.sql.adopt))
            .bind(owner)
            .bind(now_millis())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut calls = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            calls.extend(self.held_call(&id, owner).await?);
        }
        Ok(calls)
    }

    /// The call of `owner`'s running task `id`, as the database holds it.
    async fn held_call(&self, id: &str, owner: &str) -> Result<Option<CallRecord>, StoreError> {
        let call = sqlx::query_as(
            "SELECT t.id, t.plugin, t.base_url, t.attempts, t.inputs, t.state, \
             t.state_outputs, LENGTH(t.log) AS log_chars, LENGTH(t.events) AS event_chars, \
             s.step_id, s.inputs AS step_inputs FROM tasks t \
             LEFT JOIN task_steps s ON s.task_id = t.id AND s.position = \
               (SELECT MAX(position) FROM task_steps l WHERE l.task_id = t.id) \
             WHERE t.id = $1 AND t.owner = $2 AND t.status = 'PENDING'",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(call)
    }

    /// The running tasks held by lease `owner` (no step waits) last changed
    /// before `before` (Unix ms): those whose call this gateway no longer
    /// runs are strays (see [`Store::retake`]).
    pub async fn held_before(&self, owner: &str, before: i64) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT t.id FROM tasks t WHERE t.owner = $1 AND t.status = 'PENDING' \
             AND t.updated_at < $2 AND NOT EXISTS \
               (SELECT 1 FROM task_steps w WHERE w.task_id = t.id AND w.cleared = 0)",
        )
        .bind(owner)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Which of `ids` have ended (an operator ended a task whose call runs
    /// on another gateway).
    pub async fn ended_among(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut ended = Vec::new();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id FROM tasks WHERE status <> 'PENDING' AND id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            ended.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(ended)
    }

    /// Takes up again a running task of lease `owner` whose call no process
    /// runs: a write whose answer was lost (the database went away as it
    /// committed) left it claimed with nobody on it. `None` when it is no
    /// longer a running task of that live lease.
    pub async fn retake(&self, id: &str, owner: &str) -> Result<Option<CallRecord>, StoreError> {
        let now = self.sql.now;
        let taken = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET updated_at = $3 WHERE id = $1 AND owner = $2 \
             AND status = 'PENDING' AND NOT EXISTS \
               (SELECT 1 FROM task_steps w WHERE w.task_id = $1 AND w.cleared = 0) \
             AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $2 AND g.expires_at > {now})"
        )))
        .bind(id)
        .bind(owner)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        self.held_call(id, owner).await
    }

    /// Per plugin identifier, how many unfinished tasks wait for a step and
    /// how many run (an operator retires an old version once both are 0).
    pub async fn unfinished_by_plugin(&self) -> Result<Vec<UnfinishedTasks>, StoreError> {
        let counts = sqlx::query_as(
            "SELECT t.plugin, \
             SUM(CASE WHEN EXISTS (SELECT 1 FROM task_steps w \
               WHERE w.task_id = t.id AND w.cleared = 0) THEN 1 ELSE 0 END) AS waiting, \
             SUM(CASE WHEN EXISTS (SELECT 1 FROM task_steps w \
               WHERE w.task_id = t.id AND w.cleared = 0) THEN 0 ELSE 1 END) AS running \
             FROM tasks t WHERE t.status = 'PENDING' GROUP BY t.plugin ORDER BY t.plugin",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(counts)
    }

    /// The task's stored events after the first `after` (JSON lines, the
    /// first of them having SSE id `after + 1`), and whether the task ended.
    pub async fn events_after(
        &self,
        id: &str,
        after: u64,
    ) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        let sql = "SELECT events, status FROM tasks WHERE id = $1";
        let Some(row) = self.read_row(sql, id).await? else {
            return Ok(None);
        };
        let events: String = row.try_get("events")?;
        let after = usize::try_from(after).unwrap_or(usize::MAX);
        let lines = events.lines().skip(after).map(str::to_owned).collect();
        Ok(Some((lines, ended(&row)?)))
    }

    /// How many events the task's stream holds, and whether the task ended;
    /// `None` for no such task.
    pub async fn event_progress(&self, id: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let sql = "SELECT event_count, status FROM tasks WHERE id = $1";
        let Some(row) = self.read_row(sql, id).await? else {
            return Ok(None);
        };
        let count: i64 = row.try_get("event_count")?;
        Ok(Some((
            u64::try_from(count).unwrap_or_default(),
            ended(&row)?,
        )))
    }

    /// The row `sql` reads for `key` (its one parameter), retried as reads are.
    async fn read_row(&self, sql: &'static str, key: &str) -> Result<Option<AnyRow>, StoreError> {
        read_retrying(|| async {
            let row = sqlx::query(sql)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row)
        })
        .await
    }

    /// Woken after each commit that wrote webhook notices.
    pub fn outbox(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// Writes a change's notices in its transaction, commits, and wakes the
    /// outbox if there were any.
    async fn commit_with_notices(
        &self,
        mut transaction: sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        notices: Notices<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let noticed = insert_notices(id, notices, now)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        self.committed_notices(noticed);
        Ok(())
    }

    fn committed_notices(&self, count: u64) {
        if count > 0 {
            self.outbox.notify_one();
        }
    }

    /// Subscribers with notices waiting.
    pub async fn notice_subscribers(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT webhook_href FROM notices")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get("webhook_href"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Claims the delivery of `href`'s notices for lease `owner`: true when
    /// no live lease holds them (or `owner` does already). One gateway at a
    /// time delivers a subscriber's notices, in order.
    pub async fn claim_subscriber(&self, href: &str, owner: &str) -> Result<bool, StoreError> {
        let now = self.sql.now;
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO notice_claims (webhook_href, owner) VALUES ($1, $2) \
             ON CONFLICT (webhook_href) DO UPDATE SET owner = excluded.owner \
             WHERE notice_claims.owner = excluded.owner OR NOT EXISTS (SELECT 1 FROM gateways g \
               WHERE g.id = notice_claims.owner AND g.expires_at > {now})"
        )))
        .bind(href)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Gives up a claim (its worker delivered everything).
    pub async fn release_subscriber(&self, href: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM notice_claims WHERE webhook_href = $1 AND owner = $2")
            .bind(href)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A subscriber's next notices, oldest first.
    pub async fn notices(&self, href: &str, limit: i64) -> Result<Vec<Notice>, StoreError> {
        let notices = sqlx::query_as(
            "SELECT webhook_href, position, task_id, task_url, event, created_at FROM notices \
             WHERE webhook_href = $1 ORDER BY position, task_id LIMIT $2",
        )
        .bind(href)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(notices)
    }

    /// Forgets a notice (delivered, or given up).
    pub async fn delete_notice(&self, notice: &Notice) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM notices WHERE webhook_href = $1 AND position = $2 AND task_id = $3",
        )
        .bind(&notice.webhook_href)
        .bind(notice.position)
        .bind(&notice.task_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest tasks: id, plugin, status, created and finished (Unix ms).
    /// The tasks `filter` selects, newest first (ties by id), at most its
    /// limit.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskSummary>, StoreError> {
        enum Value<'a> {
            Text(&'a str),
            Number(i64),
        }
        /// Adds a value; returns its placeholder.
        fn parameter<'a>(values: &mut Vec<Value<'a>>, value: Value<'a>) -> String {
            values.push(value);
            format!("${}", values.len())
        }
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<Value<'_>> = Vec::new();
        if let Some(plugin) = &filter.plugin {
            let p = parameter(&mut values, Value::Text(plugin));
            conditions.push(format!("t.plugin = {p}"));
        }
        conditions.extend(filter.status.map(|status| match status {
            StatusFilter::Pending => "t.status = 'PENDING'".to_owned(),
            StatusFilter::Running => format!("t.status = 'PENDING' AND NOT {WAITS}"),
            StatusFilter::Waiting => format!("t.status = 'PENDING' AND {WAITS}"),
            StatusFilter::Success => "t.status = 'SUCCESS'".to_owned(),
            StatusFilter::Failure => "t.status = 'FAILURE'".to_owned(),
        }));
        if let Some(since) = filter.since {
            let p = parameter(&mut values, Value::Number(since));
            conditions.push(format!("t.created_at >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = parameter(&mut values, Value::Number(until));
            conditions.push(format!("t.created_at < {p}"));
        }
        if let Some((created_at, id)) = &filter.after {
            let at = parameter(&mut values, Value::Number(*created_at));
            let at_again = parameter(&mut values, Value::Number(*created_at));
            let id = parameter(&mut values, Value::Text(id));
            conditions.push(format!(
                "(t.created_at < {at} OR (t.created_at = {at_again} AND t.id < {id}))"
            ));
        }
        let limit = parameter(&mut values, Value::Number(filter.limit));
        let filtered = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM tasks t {filtered} \
             ORDER BY t.created_at DESC, t.id DESC LIMIT {limit}"
        );
        let mut query = sqlx::query_as::<_, TaskSummary>(sqlx::AssertSqlSafe(sql));
        for value in values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Number(number) => query.bind(number),
            };
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// One task as an operator's listing shows it.
    pub async fn task_summary(&self, id: &str) -> Result<Option<TaskSummary>, StoreError> {
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM tasks t WHERE t.id = $1");
        let summary = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(summary)
    }

    /// The ids of the tasks that retry `id`, oldest first.
    pub async fn retries_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE retry_of = $1 ORDER BY created_at, id LIMIT 100",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// A task's plugin and stored inputs (JSON), for a retry.
    pub async fn task_inputs(&self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        let sql = "SELECT plugin, inputs FROM tasks WHERE id = $1";
        let Some(row) = self.read_row(sql, id).await? else {
            return Ok(None);
        };
        Ok(Some((row.try_get("plugin")?, row.try_get("inputs")?)))
    }

    /// A stored file by its public id, with its bytes if they are inline.
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let sql = "SELECT id, secret, task_id, kind, position, name, data_type, content_type, \
                   size, storage_key, content FROM files WHERE id = $1";
        let Some(row) = self.read_row(sql, id).await? else {
            return Ok(None);
        };
        let mut file = file_record(&row)?;
        file.inline = row
            .try_get::<Option<Vec<u8>>, _>("content")?
            .map(bytes::Bytes::from);
        Ok(Some(file))
    }

    /// Starts a file of the shared file store: nothing reads it before
    /// [`Store::complete_blob`].
    pub async fn begin_blob(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO file_blobs (storage_key, size, complete, created_at) \
             VALUES ($1, 0, 0, $2)",
        )
        .bind(key)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores chunk `position` (from 0) of a file being written, and marks
    /// the file touched now (the sweep leaves files being written alone).
    pub async fn put_chunk(
        &self,
        key: &str,
        position: i64,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("UPDATE file_blobs SET created_at = $2 WHERE storage_key = $1")
            .bind(key)
            .bind(now_millis())
            .execute(&mut *transaction)
            .await?;
        sqlx::query("INSERT INTO file_chunks (storage_key, position, data) VALUES ($1, $2, $3)")
            .bind(key)
            .bind(position)
            .bind(data)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Makes a file of `size` bytes readable; fails when the file is gone
    /// (swept away as a leftover).
    pub async fn complete_blob(&self, key: &str, size: i64) -> Result<(), StoreError> {
        let completed = sqlx::query(
            "UPDATE file_blobs SET complete = 1, size = $2, created_at = $3 WHERE storage_key = $1",
        )
        .bind(key)
        .bind(size)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        if completed.rows_affected() == 0 {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        Ok(())
    }

    /// Whether a complete file is stored under `key`.
    pub async fn blob_exists(&self, key: &str) -> Result<bool, StoreError> {
        let sql = "SELECT 1 AS found FROM file_blobs WHERE storage_key = $1 AND complete = 1";
        Ok(self.read_row(sql, key).await?.is_some())
    }

    /// Chunk `position` of a file; `None` past its last.
    pub async fn chunk(&self, key: &str, position: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let row = read_retrying(|| async {
            let row = sqlx::query(
                "SELECT data FROM file_chunks WHERE storage_key = $1 AND position = $2",
            )
            .bind(key)
            .bind(position)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row)
        })
        .await?;
        Ok(row.map(|row| row.try_get("data")).transpose()?)
    }

    /// Removes a file of the shared store (its chunks go with it).
    pub async fn delete_blob(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM file_blobs WHERE storage_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets uploads that no task took since `cutoff` (Unix milliseconds):
    /// returns their storage keys, whose bytes the caller deletes.
    pub async fn forget_stale_uploads(&self, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM files WHERE task_id IS NULL AND created_at < $1 RETURNING storage_key",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get("storage_key"))
            .filter(|key: &Result<String, sqlx::Error>| {
                key.as_ref().is_ok_and(|key| !key.is_empty())
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes the shared store's files that no `files` row references and
    /// that were started before `cutoff` (Unix milliseconds): the leftovers of
    /// writes cut short by a crash. Returns how many went.
    pub async fn collect_blobs(&self, cutoff: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM file_blobs WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM files f WHERE f.storage_key = file_blobs.storage_key)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// Adds a webhook subscription; a duplicate is ignored. `event` is `""` for all.
    pub async fn subscribe(&self, id: &str, href: &str, event: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subscriptions (task_id, webhook_href, event) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(href)
        .bind(event)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a webhook subscription (all of the href's when `event` is `None`).
    pub async fn unsubscribe(
        &self,
        id: &str,
        href: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM subscriptions WHERE task_id = $1 AND webhook_href = $2 \
             AND ($3 = '*' OR event = $3)",
        )
        .bind(id)
        .bind(href)
        .bind(event.unwrap_or("*"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// The columns of a `files` row, in the order [`bind_file`] binds them.
const FILE_COLUMNS: &str = "id, secret, task_id, kind, position, name, data_type, content_type, \
                            size, storage_key, created_at, content";
/// How many values [`bind_file`] binds.
const FILE_VALUES: usize = 12;

fn insert_file(file: &FileRecord) -> Query<'_> {
    bind_file(
        sqlx::query(
            "INSERT INTO files (id, secret, task_id, kind, position, name, data_type, \
             content_type, size, storage_key, created_at, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        ),
        file,
    )
}

fn bind_file<'q>(query: Query<'q>, file: &'q FileRecord) -> Query<'q> {
    query
        .bind(&file.id)
        .bind(&file.secret)
        .bind(file.task_id.as_deref())
        .bind(file.kind.as_str())
        .bind(file.position)
        .bind(file.name.as_deref())
        .bind(&file.data_type)
        .bind(&file.content_type)
        .bind(file.size)
        .bind(&file.storage_key)
        .bind(now_millis())
        .bind(file.inline.as_deref().map(<[u8]>::to_vec))
}

/// PostgreSQL: `end` (an `UPDATE … RETURNING`, parameters $1 to $16), the
/// notices of the change (task URL $17, first position $18) and the insert of
/// `outputs` file rows (parameters from $19 on), in one statement; the rows are
/// inserted only when the update matched.
fn end_in_one_statement(end: &str, outputs: usize, notices: Notices<'_>) -> String {
    let mut sql = format!("WITH ended AS ({end})");
    if !notices.events.is_empty() {
        let insert = notices_sql(notices.events, ["$1", "$17", "$18", "$8"], ", ended");
        sql.push_str(&format!(", notices_sent AS ({insert} RETURNING 1)"));
    }
    for output in 0..outputs {
        let first = FIRST_FILE_PARAMETER + output * FILE_VALUES;
        let values: Vec<String> = (first..first + FILE_VALUES)
            .map(|parameter| format!("${parameter}"))
            .collect();
        sql.push_str(&format!(
            ", output_{output} AS (INSERT INTO files ({FILE_COLUMNS}) SELECT {} FROM ended)",
            values.join(", ")
        ));
    }
    let noticed = if notices.events.is_empty() {
        "0"
    } else {
        "(SELECT COUNT(*) FROM notices_sent)"
    };
    sql.push_str(&format!(
        " SELECT plugin, created_at, event_count, {noticed} AS notices FROM ended"
    ));
    sql
}

/// The insert of a change's notices: a row per event and subscriber of it,
/// with consecutive positions. `parameters` name the task id, the task URL,
/// the first position and the time; `also_from` joins another table (the row
/// the change updated) so nothing is inserted without it.
fn notices_sql(events: &[&str], parameters: [&str; 4], also_from: &str) -> String {
    let [task, task_url, position, now] = parameters;
    let selects: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let position = match index {
                0 => position.to_owned(),
                _ => format!("{position} + {index}"),
            };
            format!(
                "SELECT DISTINCT s.webhook_href, {position}, {task}, {task_url}, '{event}', {now} \
                 FROM subscriptions s{also_from} \
                 WHERE s.task_id = {task} AND s.event IN ('', '{event}')"
            )
        })
        .collect();
    format!(
        "INSERT INTO notices (webhook_href, position, task_id, task_url, event, created_at) {}",
        selects.join(" UNION ALL ")
    )
}

/// The notices of a change, as a statement of its own (in the change's
/// transaction).
fn insert_notices<'q>(id: &'q str, notices: Notices<'q>, now: i64) -> Query<'q> {
    debug_assert!(
        !notices.events.is_empty(),
        "a change with notices names them"
    );
    let sql = notices_sql(notices.events, ["$1", "$2", "$3", "$4"], "");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(notices.task_url)
        .bind(notice_position(notices.events.len()))
        .bind(now)
}

/// Positions for `count` new notices: after every earlier one of this process
/// (and about the time in microseconds, so another process's interleave).
fn notice_position(count: usize) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let count = i64::try_from(count).unwrap_or(1).max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let mut first = now;
    let update = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        first = now.max(last + 1);
        Some(first + count - 1)
    });
    // The closure never refuses, so the update always succeeds.
    let _always_ok = update;
    first
}

/// Whether the task of a row with its `status` has ended.
fn ended(row: &AnyRow) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<String, _>("status")? != TaskStatus::Pending.as_str())
}

fn file_record(row: &AnyRow) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        id: row.try_get("id")?,
        secret: row.try_get("secret")?,
        task_id: row.try_get("task_id")?,
        kind: if row.try_get::<String, _>("kind")? == "input" {
            FileKind::Input
        } else {
            FileKind::Output
        },
        position: row.try_get("position")?,
        name: row.try_get("name")?,
        data_type: row.try_get("data_type")?,
        content_type: row.try_get("content_type")?,
        size: row.try_get("size")?,
        storage_key: row.try_get("storage_key")?,
        inline: None,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.chars().take(64).collect(),
    }
}

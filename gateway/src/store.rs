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

/// Past this many characters a task's log takes no more lines.
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
#[derive(Debug, Clone)]
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
    /// How many times the task was started.
    pub attempts: i64,
    /// Steps in order.
    pub steps: Vec<StepRecord>,
    /// Output files in order; read only once the task has finished.
    pub outputs: Vec<FileRecord>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, when finished.
    pub finished_at: Option<i64>,
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
}

/// The columns a [`Batch`] sets, with [`Batch::update`]'s parameters.
macro_rules! batch_columns {
    () => {
        "log = CASE WHEN $2 = '' THEN log WHEN log = '' THEN $2 ELSE log || $3 END, \
         progress_value = COALESCE($4, progress_value), \
         progress_start = COALESCE($5, progress_start), \
         progress_target = COALESCE($6, progress_target), \
         progress_unit = COALESCE($7, progress_unit), updated_at = $8"
    };
}

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
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.progress.is_none() && self.outputs.is_empty()
    }

    /// Adds a log line.
    pub fn log_line(&mut self, line: &str) {
        if !self.log.is_empty() {
            self.log.push('\n');
        }
        self.log.push_str(line);
    }

    /// `sql` with its parameters bound: $1 the id, $2 the new log text (the
    /// lines and `reason`), $3 the same after a line end, $4 to $7 the progress
    /// (NULL: unchanged), $8 the time.
    fn update<'q>(
        &'q self,
        sql: impl sqlx::SqlSafeStr,
        id: &'q str,
        reason: Option<&str>,
        now: i64,
    ) -> Query<'q> {
        let mut text = self.log.clone();
        if let Some(reason) = reason.filter(|reason| !reason.is_empty()) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(reason);
        }
        let after_line_end = if text.is_empty() {
            String::new()
        } else {
            format!("\n{text}")
        };
        let progress = self.progress.as_ref();
        sqlx::query(sql)
            .bind(id)
            .bind(text)
            .bind(after_line_end)
            .bind(progress.map(|progress| progress.value))
            .bind(progress.map(|progress| progress.start))
            .bind(progress.map(|progress| progress.target))
            .bind(progress.map(|progress| progress.unit.clone()))
            .bind(now)
    }
}

/// One line of a task listing.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// The task id.
    pub id: String,
    /// The plugin identifier.
    pub plugin: String,
    /// `PENDING`, `SUCCESS` or `FAILURE`.
    pub status: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, when finished.
    pub finished_at: Option<i64>,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a database we do not support.
    #[error("unsupported database URL `{0}`: expected postgres://… or sqlite:…")]
    UnsupportedUrl(String),
}

/// The task store: a connection pool over PostgreSQL or SQLite, and a bounded
/// cache of finished tasks (a finished task never changes: every write to a
/// task's row, steps or outputs requires it `PENDING`).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL (else SQLite): a task's end is one statement there.
    postgres: bool,
    finished: Arc<FinishedTasks>,
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

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            // No ping before each use: a broken connection fails its query, which
            // the caller sees as any other database error.
            .test_before_acquire(false);
        if sqlite {
            options = options.after_connect(|connection, _| {
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
        let pool = options.connect(url).await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self {
            pool,
            postgres: !sqlite,
            finished: Arc::new(quick_cache::sync::Cache::with_weighter(
                16 * 1024,
                FINISHED_CACHE_BYTES,
                RecordWeight,
            )),
        })
    }

    /// Inserts a new `PENDING` task, its first attempt counted, and attaches the
    /// files uploaded with it, in one transaction; committed when this returns.
    pub async fn create_task(
        &self,
        id: &str,
        plugin: &str,
        inputs: &str,
        base_url: &str,
        uploads: &[String],
    ) -> Result<(), StoreError> {
        let insert = sqlx::query(
            "INSERT INTO tasks (id, plugin, status, log, inputs, base_url, attempts, created_at, \
             updated_at) VALUES ($1, $2, 'PENDING', '', $3, $4, 1, $5, $5)",
        )
        .bind(id)
        .bind(plugin)
        .bind(inputs)
        .bind(base_url)
        .bind(now_millis());
        if uploads.is_empty() {
            // One statement: no transaction round trips on the common path.
            insert.execute(&self.pool).await?;
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        insert.execute(&mut *transaction).await?;
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

    /// The task's validated inputs (JSON) and the base URL its client used.
    pub async fn task_inputs(&self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT inputs, base_url FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("inputs")?, row.try_get("base_url")?)))
            .transpose()
            .map_err(|error: sqlx::Error| StoreError::from(error))
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
        // The row and its steps in one query (a row per step; a task has few);
        // outputs only show once the task has finished (the contract's
        // `outputs` is `[]` before), so only then.
        let rows = sqlx::query(
            "SELECT t.id, t.plugin, t.status, t.log, t.progress_value, t.progress_start, \
             t.progress_target, t.progress_unit, t.attempts, t.created_at, t.finished_at, \
             s.step_id, s.form, s.cleared FROM tasks t \
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
        });
        if task.finished_at.is_some() {
            self.finished.insert(id.to_owned(), task.clone());
        }
        Ok(Some(task))
    }

    /// Counts one more start of the task; a run after the first starts afresh:
    /// the steps and outputs of the earlier run are dropped. `None`: the task
    /// has ended meanwhile.
    pub async fn begin_attempt(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE tasks SET attempts = attempts + 1, progress_value = NULL, updated_at = $2 \
             WHERE id = $1 AND status = 'PENDING' RETURNING attempts",
        )
        .bind(id)
        .bind(now_millis())
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts: i64 = row.try_get("attempts")?;
        if attempts > 1 {
            sqlx::query("DELETE FROM task_steps WHERE task_id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            sqlx::query("DELETE FROM files WHERE task_id = $1 AND kind = 'output'")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(Some(attempts))
    }

    /// Appends a line to the task's log.
    pub async fn append_log(&self, id: &str, line: &str) -> Result<(), StoreError> {
        // The line end is bound, not written in SQL: the two databases escape differently.
        sqlx::query(
            "UPDATE tasks SET log = CASE WHEN log = '' THEN $2 ELSE log || $3 END, \
             updated_at = $4 WHERE id = $1 AND status = 'PENDING' AND LENGTH(log) < $5",
        )
        .bind(id)
        .bind(line)
        .bind(format!("\n{line}"))
        .bind(now_millis())
        .bind(MAX_LOG_CHARS as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a pending step after the existing ones.
    pub async fn add_step(&self, id: &str, step_id: &str, form: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO task_steps (task_id, position, step_id, form, cleared) \
             SELECT $1, COUNT(*), $2, $3, 0 FROM task_steps WHERE task_id = $1 \
             HAVING EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = 'PENDING')",
        )
        .bind(id)
        .bind(step_id)
        .bind(form)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the task's uncleared step `step_id` cleared; false when there is none.
    pub async fn clear_step(&self, id: &str, step_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE task_steps SET cleared = 1 WHERE task_id = $1 AND step_id = $2 AND cleared = 0 \
             AND EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = 'PENDING')",
        )
        .bind(id)
        .bind(step_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Writes a running task's batched events: its output rows and, in the same
    /// transaction, its new log lines and progress. A task that already ended
    /// takes none of them.
    pub async fn write(&self, id: &str, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let update = batch.update(
            concat!(
                "UPDATE tasks SET ",
                batch_columns!(),
                " WHERE id = $1 AND status = 'PENDING'"
            ),
            id,
            None,
            now_millis(),
        );
        if batch.outputs.is_empty() {
            update.execute(&self.pool).await?;
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        if update.execute(&mut *transaction).await?.rows_affected() == 0 {
            return Ok(());
        }
        for output in &batch.outputs {
            insert_file(output).execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Ends a task: its status, its last batched events and, for a failure, the
    /// reason appended to its log, in one transaction. A task that already ended
    /// is left as it is; returns the task when this call ended it.
    pub async fn finish(
        &self,
        id: &str,
        status: TaskStatus,
        reason: Option<&str>,
        batch: &Batch,
    ) -> Result<Option<Finished>, StoreError> {
        let now = now_millis();
        const END: &str = concat!(
            "UPDATE tasks SET status = $9, finished_at = $8, ",
            batch_columns!(),
            " WHERE id = $1 AND status = 'PENDING' RETURNING plugin, created_at"
        );
        let finished = |row: AnyRow| -> Result<Finished, StoreError> {
            Ok(Finished {
                plugin: row.try_get("plugin")?,
                created_at: row.try_get("created_at")?,
                finished_at: now,
            })
        };
        if batch.outputs.is_empty() {
            let update = batch.update(END, id, reason, now).bind(status.as_str());
            let row = update.fetch_optional(&self.pool).await?;
            return row.map(finished).transpose();
        }
        if self.postgres {
            // One statement, one round trip: the outputs are inserted only if
            // the update ended the task.
            let sql = end_with_outputs(END, batch.outputs.len());
            let mut update = batch
                .update(sqlx::AssertSqlSafe(sql), id, reason, now)
                .bind(status.as_str());
            for output in &batch.outputs {
                update = bind_file(update, output);
            }
            let row = update.fetch_optional(&self.pool).await?;
            return row.map(finished).transpose();
        }
        let mut transaction = self.pool.begin().await?;
        let update = batch.update(END, id, reason, now).bind(status.as_str());
        let Some(row) = update.fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        for output in &batch.outputs {
            insert_file(output).execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        finished(row).map(Some)
    }

    /// Id, plugin and base URL of the tasks that have not ended, oldest first.
    pub async fn pending_tasks(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, plugin, base_url FROM tasks WHERE status = 'PENDING' ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    row.try_get("plugin")?,
                    row.try_get("base_url")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The newest tasks: id, plugin, status, created and finished (Unix ms).
    pub async fn recent_tasks(&self, limit: i64) -> Result<Vec<TaskSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, plugin, status, created_at, finished_at FROM tasks \
             ORDER BY created_at DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TaskSummary {
                    id: row.try_get("id")?,
                    plugin: row.try_get("plugin")?,
                    status: row.try_get("status")?,
                    created_at: row.try_get("created_at")?,
                    finished_at: row.try_get("finished_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// A stored file by its public id, with its bytes if they are inline.
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret, task_id, kind, position, name, data_type, content_type, size, \
             storage_key, content FROM files WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut file = file_record(&row)?;
        file.inline = row
            .try_get::<Option<Vec<u8>>, _>("content")?
            .map(bytes::Bytes::from);
        Ok(Some(file))
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

    /// The webhooks to call for `event` of a task.
    pub async fn subscribers(&self, id: &str, event: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT webhook_href FROM subscriptions WHERE task_id = $1 \
             AND (event = '' OR event = $2) ORDER BY webhook_href",
        )
        .bind(id)
        .bind(event)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get("webhook_href"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
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

/// PostgreSQL: `end` (an `UPDATE … RETURNING`, parameters $1 to $9) and the
/// insert of `outputs` file rows (parameters from $10 on), in one statement;
/// the rows are inserted only when the update matched.
fn end_with_outputs(end: &str, outputs: usize) -> String {
    let mut sql = format!("WITH ended AS ({end})");
    for output in 0..outputs {
        let first = 10 + output * FILE_VALUES;
        let values: Vec<String> = (first..first + FILE_VALUES)
            .map(|parameter| format!("${parameter}"))
            .collect();
        sql.push_str(&format!(
            ", output_{output} AS (INSERT INTO files ({FILE_COLUMNS}) SELECT {} FROM ended)",
            values.join(", ")
        ));
    }
    sql.push_str(" SELECT plugin, created_at FROM ended");
    sql
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

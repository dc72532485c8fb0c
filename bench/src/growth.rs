//! How cost grows: supervisor memory and idle CPU with many plugins, and the
//! status of a finished task among many stored ones.

use std::time::Duration;

use anyhow::Result;
use sqlx::{Connection, postgres::PgConnection};

use crate::procs::{PluginFolders, Supervisor, binary_manifest, versioned_manifest};

pub struct Idle {
    pub plugins: usize,
    pub rss: u64,
    /// Percent of one core.
    pub cpu_percent: f64,
}

/// A supervisor with `plugins` plugins: `hello-world` and `versioned` copies.
pub async fn supervisor_with(plugins: usize) -> Result<(PluginFolders, Supervisor)> {
    let folders = PluginFolders::new()?;
    folders.add(
        "hello-world",
        &binary_manifest("corral-plugin-hello-world", &[])?,
    )?;
    for copy in 1..plugins {
        folders.add(
            &format!("echo-{copy}"),
            &versioned_manifest("echo", &format!("v1.0.{copy}"))?,
        )?;
    }
    let supervisor = Supervisor::start(folders.path())?;
    supervisor.all_ready(plugins).await?;
    Ok((folders, supervisor))
}

/// Memory and CPU of a supervisor with `plugins` ready plugins, idle for `window`.
pub async fn idle(plugins: usize, window: Duration) -> Result<Idle> {
    let (_folders, supervisor) = supervisor_with(plugins).await?;
    // Let start-up settle: the first health checks and the plugins' own start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = supervisor.process.cpu()?;
    tokio::time::sleep(window).await;
    let used = supervisor.process.cpu()? - before;
    Ok(Idle {
        plugins,
        rss: supervisor.process.rss()?,
        cpu_percent: used.as_secs_f64() / window.as_secs_f64() * 100.0,
    })
}

/// Adds finished hello-world tasks (each with its output row) until the
/// database holds `total`.
pub async fn seed_finished(database_url: &str, from: u64, total: u64) -> Result<()> {
    let mut connection = PgConnection::connect(database_url).await?;
    const BATCH: u64 = 100_000;
    let mut start = from;
    while start < total {
        let end = (start + BATCH).min(total);
        // Ids are md5 hex of the index: as long and as random as the gateway's.
        let tasks = format!(
            "INSERT INTO tasks (id, plugin, status, log, inputs, base_url, attempts, created_at, \
             updated_at, finished_at) SELECT md5(i::text), 'hello-world@v0-2-1', 'SUCCESS', \
             'result: ''hello output''', '{{\"inputStr\":\"hello input\"}}', 'http://127.0.0.1', 1, \
             1700000000000 + i, 1700000000000 + i, 1700000000001 + i \
             FROM generate_series({start}, {}) AS i",
            end - 1
        );
        let files = format!(
            "INSERT INTO files (id, secret, task_id, kind, position, name, data_type, content_type, \
             size, storage_key, created_at) SELECT md5('f' || i), md5('s' || i), md5(i::text), \
             'output', 0, 'out.txt', 'custom/hello-world-output', 'text/plain', 12, md5('k' || i), \
             1700000000001 + i FROM generate_series({start}, {}) AS i",
            end - 1
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(tasks))
            .execute(&mut connection)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(files))
            .execute(&mut connection)
            .await?;
        start = end;
    }
    sqlx::raw_sql("ANALYZE tasks; ANALYZE files")
        .execute(&mut connection)
        .await?;
    Ok(())
}

/// Status paths of `count` seeded tasks spread over the first `total`, none
/// read before (each `round` picks another set).
pub async fn seeded_paths(
    database_url: &str,
    total: u64,
    count: u64,
    round: u64,
) -> Result<Vec<String>> {
    let mut connection = PgConnection::connect(database_url).await?;
    let step = (total / count).max(1);
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT md5(((k * {step} + {round}) % {total})::text) FROM generate_series(0, {}) AS k",
        count - 1
    )))
    .fetch_all(&mut connection)
    .await?;
    Ok(ids.into_iter().map(|id| format!("/tasks/{id}/")).collect())
}

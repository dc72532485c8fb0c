//! `corral-bench`: Corral's benchmark suite. It starts the real `corral`
//! supervisor and gateway with real plugins, PostgreSQL and SQLite, measures
//! end to end against the floor, reads, lifecycle, streaming and growth in one
//! run, and writes the figures to a Markdown file (`BENCHMARKS.md`). It asserts
//! nothing about time; `--smoke` runs every section in seconds, for CI.

// A binary: its modules' `pub` items are the crate's, by design.
#![allow(unreachable_pub)]

mod growth;
mod http;
mod lifecycle;
mod procs;
mod reads;
mod report;
mod stats;
mod streaming;
mod tasks;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use crate::{
    procs::{Database, Gateway, PluginFolders, Supervisor, binary_manifest, python_manifest},
    report::{Db, EndToEnd, Floor, Growth, PythonRow, Report, StatusAt},
    stats::Spread,
    tasks::Client,
};

/// Measure Corral and write the figures to a Markdown file.
#[derive(Debug, Parser)]
#[command(name = "corral-bench")]
struct Args {
    /// A few seconds per section instead of minutes: keeps the suite working.
    #[arg(long)]
    smoke: bool,
    /// Where to write the figures.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// A PostgreSQL database to create the benchmark's databases from.
    #[arg(
        long,
        env = "CORRAL_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Run only these sections (all by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Tasks,
    Reads,
    Lifecycle,
    Python,
    Streaming,
    Growth,
    Scale,
}

/// How much each section does.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub rounds: usize,
    pub tasks_c1: usize,
    pub tasks_polling_c1: usize,
    pub tasks_parallel: usize,
    pub concurrencies: Vec<usize>,
    /// The concurrency of the Python comparison's parallel runs.
    pub python_concurrency: usize,
    pub floor_c1: usize,
    pub floor_parallel: usize,
    pub read_for: Duration,
    pub lifecycle_runs: usize,
    pub stream_bytes: u64,
    pub idle_window: Duration,
    pub plugin_counts: Vec<usize>,
    pub stored_tasks: Vec<u64>,
    pub status_samples: u64,
    /// Tasks per round of each gateways × hosts shape.
    pub scale_tasks: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            rounds: 3,
            tasks_c1: 1000,
            tasks_polling_c1: 150,
            tasks_parallel: 3000,
            concurrencies: vec![1, 16, 64],
            python_concurrency: 16,
            floor_c1: 1000,
            floor_parallel: 5000,
            read_for: Duration::from_secs(5),
            lifecycle_runs: 20,
            stream_bytes: 1 << 30,
            idle_window: Duration::from_secs(5),
            plugin_counts: vec![1, 10, 100],
            stored_tasks: vec![10_000, 1_000_000],
            status_samples: 1000,
            scale_tasks: 3000,
        }
    }

    fn smoke() -> Self {
        Self {
            rounds: 1,
            tasks_c1: 20,
            tasks_polling_c1: 10,
            tasks_parallel: 50,
            concurrencies: vec![1, 8],
            python_concurrency: 8,
            floor_c1: 20,
            floor_parallel: 50,
            read_for: Duration::from_millis(300),
            lifecycle_runs: 2,
            stream_bytes: 16 << 20,
            idle_window: Duration::from_millis(500),
            plugin_counts: vec![1, 3],
            stored_tasks: vec![1000, 2000],
            status_samples: 50,
            scale_tasks: 50,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("corral-bench: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let sizes = if args.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    let wanted = |section| args.only.is_empty() || args.only.contains(&section);
    let mut report = Report::new(sizes.clone(), args.smoke);
    if wanted(Section::Tasks) || wanted(Section::Reads) {
        tasks_and_reads(
            args,
            &sizes,
            &mut report,
            wanted(Section::Tasks),
            wanted(Section::Reads),
        )
        .await
        .context("end to end, floor and reads")?;
    }
    if wanted(Section::Lifecycle) {
        lifecycle(&sizes, &mut report).await.context("lifecycle")?;
    }
    if wanted(Section::Python) {
        python(&sizes, &mut report)
            .await
            .context("Python plugins")?;
    }
    if wanted(Section::Streaming) {
        streaming(&sizes, &mut report).await.context("streaming")?;
    }
    if wanted(Section::Growth) {
        growth(args, &sizes, &mut report).await.context("growth")?;
    }
    if wanted(Section::Scale) {
        scale(args, &sizes, &mut report)
            .await
            .context("several gateways and hosts")?;
    }
    report.postgres_version = report::postgres_version(&args.postgres).await;
    let markdown = report.render();
    std::fs::write(&args.out, markdown)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("corral-bench: wrote {}", args.out.display());
    Ok(())
}

/// hello-world end to end at the highest concurrency over 1, 2 and 3 gateways
/// and 1 and 2 plugin hosts on one PostgreSQL database and Redis (the
/// machine's, with a prefix of the run's own): tasks per second, and the CPU
/// the gateways and the hosts (supervisors and plugins) spent per task.
async fn scale(args: &Args, sizes: &Sizes, report: &mut Report) -> Result<()> {
    let concurrency = *sizes.concurrencies.last().unwrap_or(&1);
    let prefix = format!("bench-{:016x}", rand::random::<u64>());
    for (gateways, hosts) in [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)] {
        progress(&format!("scale: {gateways} gateways, {hosts} hosts"));
        let folders = PluginFolders::new()?;
        folders.add(
            "hello-world",
            &binary_manifest("corral-plugin-hello-world", &[])?,
        )?;
        let supervisors = (0..hosts)
            .map(|_| Supervisor::start(folders.path()))
            .collect::<Result<Vec<_>>>()?;
        let mut plugin_pids = Vec::new();
        for supervisor in &supervisors {
            plugin_pids.extend(
                supervisor
                    .all_ready(1)
                    .await?
                    .iter()
                    .map(|plugin| plugin.pid),
            );
        }
        let database = Database::create(&args.postgres).await?;
        let extra = [
            "--redis-url".to_owned(),
            "redis://127.0.0.1:6379/".to_owned(),
            "--redis-prefix".to_owned(),
            prefix.clone(),
        ];
        let on: Vec<&Supervisor> = supervisors.iter().collect();
        let mut started = Vec::new();
        for _ in 0..gateways {
            started.push(Gateway::start_over(&on, 1, Some(&database.url), &extra).await?);
        }
        let addrs: Vec<_> = started.iter().map(|gateway| gateway.addr).collect();
        let cpu = || -> Result<(Duration, Duration)> {
            let mut gateway_cpu = Duration::ZERO;
            for gateway in &started {
                gateway_cpu += gateway.process.cpu()?;
            }
            let mut host_cpu = Duration::ZERO;
            for supervisor in &supervisors {
                host_cpu += supervisor.process.cpu()?;
            }
            for pid in &plugin_pids {
                host_cpu += procs::cpu_of(*pid)?;
            }
            Ok((gateway_cpu, host_cpu))
        };
        let mut row = report::ScaleRow {
            gateways,
            hosts,
            ..report::ScaleRow::default()
        };
        for _ in 0..sizes.rounds {
            let before = cpu()?;
            let mut run = tasks::end_to_end_across(
                &addrs,
                tasks::HELLO_PROCESS,
                Client::Events,
                sizes.scale_tasks,
                concurrency,
            )
            .await?;
            let after = cpu()?;
            let per_task = |spent: Duration| spent.as_secs_f64() * 1e3 / sizes.scale_tasks as f64;
            row.per_second.push(run.per_second);
            row.p50.push(run.latencies.p50().as_secs_f64() * 1e3);
            row.p99.push(run.latencies.p99().as_secs_f64() * 1e3);
            row.gateway_cpu_ms
                .push(per_task(after.0.saturating_sub(before.0)));
            row.host_cpu_ms
                .push(per_task(after.1.saturating_sub(before.1)));
        }
        report.scale.push(row);
        drop(started);
        database.drop_now().await?;
    }
    Ok(())
}

fn progress(what: &str) {
    eprintln!("corral-bench: {what}");
}

async fn tasks_and_reads(
    args: &Args,
    sizes: &Sizes,
    report: &mut Report,
    tasks: bool,
    reads: bool,
) -> Result<()> {
    let folders = PluginFolders::new()?;
    folders.add(
        "hello-world",
        &binary_manifest("corral-plugin-hello-world", &[])?,
    )?;
    let supervisor = Supervisor::start(folders.path())?;
    let plugins = supervisor.all_ready(1).await?;
    let endpoint = plugins[0].endpoint.clone();
    let scratch = tempfile::tempdir()?;
    for db in [Db::Postgres, Db::Sqlite] {
        let database = match db {
            Db::Postgres => Some(Database::create(&args.postgres).await?),
            Db::Sqlite => None,
        };
        let url = database.as_ref().map(|database| database.url.as_str());
        let gateway = Gateway::start(&supervisor, 1, url).await?;
        if tasks {
            let mut floor_db = None;
            let floor_url = match db {
                Db::Postgres => {
                    let created = Database::create(&args.postgres).await?;
                    let url = created.url.clone();
                    floor_db = Some(created);
                    url
                }
                Db::Sqlite => format!(
                    "sqlite://{}?mode=rwc",
                    scratch.path().join("floor.db").display()
                ),
            };
            end_to_end(&gateway, db, sizes, report).await?;
            progress(&format!("{}: the floor", db.name()));
            report
                .floors
                .push(floor(db, &endpoint, &floor_url, sizes).await?);
            if let Some(database) = floor_db {
                database.drop_now().await?;
            }
        }
        if reads {
            progress(&format!("{}: reads", db.name()));
            report.reads.push((db, read_loads(&gateway, sizes).await?));
        }
        drop(gateway);
        if let Some(database) = database {
            database.drop_now().await?;
        }
    }
    Ok(())
}

async fn end_to_end(gateway: &Gateway, db: Db, sizes: &Sizes, report: &mut Report) -> Result<()> {
    for client in [Client::Events, Client::Polling] {
        for &concurrency in &sizes.concurrencies {
            progress(&format!(
                "{}: end to end, {}, concurrency {concurrency}",
                db.name(),
                client.name()
            ));
            let n = match (client, concurrency) {
                (Client::Polling, 1) => sizes.tasks_polling_c1,
                (_, 1) => sizes.tasks_c1,
                _ => sizes.tasks_parallel,
            };
            let mut row = EndToEnd {
                db,
                client,
                concurrency,
                per_second: Spread::default(),
                p50: Spread::default(),
                p99: Spread::default(),
                rss: 0,
            };
            for _ in 0..sizes.rounds {
                let mut run =
                    tasks::end_to_end(gateway.addr, tasks::HELLO_PROCESS, client, n, concurrency)
                        .await?;
                row.per_second.push(run.per_second);
                row.p50.push(run.latencies.p50().as_secs_f64() * 1e3);
                row.p99.push(run.latencies.p99().as_secs_f64() * 1e3);
            }
            row.rss = gateway.process.rss()?;
            report.end_to_end.push(row);
        }
    }
    Ok(())
}

async fn floor(db: Db, endpoint: &str, store_url: &str, sizes: &Sizes) -> Result<Floor> {
    let parallel = *sizes.concurrencies.last().unwrap_or(&1);
    let mut floor = Floor {
        db,
        invoke_p50: Spread::default(),
        invoke_p99: Spread::default(),
        invoke_per_second: Spread::default(),
        store_p50: Spread::default(),
        store_per_second: Spread::default(),
    };
    for _ in 0..sizes.rounds {
        let mut invoke = tasks::direct_invoke(endpoint, sizes.floor_c1, 1).await?;
        floor
            .invoke_p50
            .push(invoke.latencies.p50().as_secs_f64() * 1e3);
        floor
            .invoke_p99
            .push(invoke.latencies.p99().as_secs_f64() * 1e3);
        let invoke = tasks::direct_invoke(endpoint, sizes.floor_parallel, parallel).await?;
        floor.invoke_per_second.push(invoke.per_second);
        let mut store = tasks::store_floor(store_url, sizes.floor_c1, 1).await?;
        floor
            .store_p50
            .push(store.latencies.p50().as_secs_f64() * 1e3);
        let store = tasks::store_floor(store_url, sizes.floor_parallel, parallel).await?;
        floor.store_per_second.push(store.per_second);
    }
    Ok(floor)
}

async fn read_loads(gateway: &Gateway, sizes: &Sizes) -> Result<Vec<report::ReadRow>> {
    // A finished task to read.
    let mut conn = http::Conn::open(gateway.addr).await?;
    let created = conn
        .post_form(tasks::HELLO_PROCESS, "inputStr=read+me".into())
        .await?;
    let task = http::path_of(created.location.as_deref().context("no Location")?).to_owned();
    conn.get(&format!("{task}events")).await?;
    let mut rows = Vec::new();
    for (what, path) in [
        ("`GET /plugins/`", "/plugins/".to_owned()),
        (
            "`GET /plugins/hello-world@v0-2-1/`",
            "/plugins/hello-world@v0-2-1/".to_owned(),
        ),
        ("finished `GET /tasks/<id>/`", task),
    ] {
        let mut busy = reads::load(gateway.addr, &path, 64, sizes.read_for).await?;
        let mut alone = reads::load(gateway.addr, &path, 1, sizes.read_for / 2).await?;
        rows.push(report::ReadRow {
            what,
            per_second: busy.per_second,
            p50: busy.latencies.p50(),
            p99: busy.latencies.p99(),
            alone_p50: alone.latencies.p50(),
            alone_p99: alone.latencies.p99(),
        });
    }
    Ok(rows)
}

async fn lifecycle(sizes: &Sizes, report: &mut Report) -> Result<()> {
    let folders = PluginFolders::new()?;
    folders.add(
        "hello-world",
        &binary_manifest("corral-plugin-hello-world", &[])?,
    )?;
    folders.add("csv-visualization", &python_manifest("csv-visualization")?)?;
    folders.add("qiskit-simulator", &python_manifest("qiskit-simulator")?)?;
    let supervisor = Supervisor::start(folders.path())?;
    supervisor.all_ready(3).await?;
    for (plugin, label) in [
        ("hello-world", "hello-world (Rust)"),
        ("csv-visualization", "csv-visualization (Python)"),
        ("qiskit-simulator", "qiskit-simulator (Python, qiskit 0.43)"),
    ] {
        progress(&format!("lifecycle of {plugin}"));
        let measured = lifecycle::measure(&supervisor, plugin, sizes.lifecycle_runs).await?;
        report.lifecycle.push((label, measured));
    }
    Ok(())
}

/// hello-world against hello-world-python (the same plugin on the Python SDK)
/// through one gateway on SQLite: latency alone, throughput in parallel, and
/// each plugin process's memory after its tasks.
async fn python(sizes: &Sizes, report: &mut Report) -> Result<()> {
    let folders = PluginFolders::new()?;
    folders.add(
        "hello-world",
        &binary_manifest("corral-plugin-hello-world", &[])?,
    )?;
    folders.add(
        "hello-world-python",
        &python_manifest("hello-world-python")?,
    )?;
    let supervisor = Supervisor::start(folders.path())?;
    let plugins = supervisor.all_ready(2).await?;
    let gateway = Gateway::start(&supervisor, 2, None).await?;
    let parallel = sizes.python_concurrency;
    for (folder, label, process) in [
        ("hello-world", "Rust", tasks::HELLO_PROCESS),
        ("hello-world-python", "Python", tasks::HELLO_PYTHON_PROCESS),
    ] {
        progress(&format!("Python plugins: {folder}"));
        let mut row = PythonRow {
            label,
            p50: Spread::default(),
            per_second: Spread::default(),
            rss: 0,
        };
        for _ in 0..sizes.rounds {
            let mut alone =
                tasks::end_to_end(gateway.addr, process, Client::Events, sizes.tasks_c1, 1).await?;
            row.p50.push(alone.latencies.p50().as_secs_f64() * 1e3);
            let busy = tasks::end_to_end(
                gateway.addr,
                process,
                Client::Events,
                sizes.tasks_parallel,
                parallel,
            )
            .await?;
            row.per_second.push(busy.per_second);
        }
        let pid = plugins
            .iter()
            .find(|status| status.plugin == folder)
            .map(|status| status.pid)
            .context("the plugin's pid")?;
        row.rss = procs::proc_status_bytes(pid, "VmRSS:")?;
        report.python.push(row);
    }
    Ok(())
}

async fn streaming(sizes: &Sizes, report: &mut Report) -> Result<()> {
    progress("streaming");
    let folders = PluginFolders::new()?;
    folders.add("bulk", &binary_manifest("examples/bulk", &[])?)?;
    let supervisor = Supervisor::start(folders.path())?;
    supervisor.all_ready(1).await?;
    let gateway = Gateway::start(&supervisor, 1, None).await?;
    report.streaming = Some(streaming::measure(&gateway, sizes.stream_bytes).await?);
    Ok(())
}

async fn growth(args: &Args, sizes: &Sizes, report: &mut Report) -> Result<()> {
    let mut result = Growth::default();
    for &count in &sizes.plugin_counts {
        progress(&format!("growth: supervisor with {count} plugins"));
        result
            .idle
            .push(growth::idle(count, sizes.idle_window).await?);
    }
    let most = *sizes.plugin_counts.last().unwrap_or(&1);
    progress(&format!("growth: tasks with {most} plugins loaded"));
    let (_folders, supervisor) = growth::supervisor_with(most).await?;
    let database = Database::create(&args.postgres).await?;
    let gateway = Gateway::start(&supervisor, most, Some(&database.url)).await?;
    let parallel = *sizes.concurrencies.last().unwrap_or(&1);
    let mut loaded = Spread::default();
    for _ in 0..sizes.rounds {
        let run = tasks::end_to_end(
            gateway.addr,
            tasks::HELLO_PROCESS,
            Client::Events,
            sizes.tasks_parallel,
            parallel,
        )
        .await?;
        loaded.push(run.per_second);
    }
    result.loaded = Some((most, parallel, loaded));
    let mut seeded = 0;
    for (round, &total) in sizes.stored_tasks.iter().enumerate() {
        progress(&format!("growth: storing {total} finished tasks"));
        growth::seed_finished(&database.url, seeded, total).await?;
        seeded = total;
        let paths =
            growth::seeded_paths(&database.url, total, sizes.status_samples, round as u64).await?;
        let mut first = reads::each_once(gateway.addr, &paths).await?;
        let mut busy = reads::load(gateway.addr, &paths[0], 64, sizes.read_for / 2).await?;
        result.status.push(StatusAt {
            tasks: total,
            first_p50: first.p50(),
            first_p99: first.p99(),
            busy_per_second: busy.per_second,
            busy_p99: busy.latencies.p99(),
        });
    }
    drop(gateway);
    database.drop_now().await?;
    report.growth = Some(result);
    Ok(())
}

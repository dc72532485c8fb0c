//! The figures of one run, and the Markdown they are written as.

use std::{fmt::Write, process::Command, time::Duration};

use crate::{
    Sizes,
    growth::Idle,
    lifecycle::Lifecycle,
    stats::{Spread, ms},
    streaming::Streaming,
    tasks::Client,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Sqlite,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }
}

pub struct EndToEnd {
    pub db: Db,
    pub client: Client,
    pub concurrency: usize,
    pub per_second: Spread,
    /// Milliseconds, one value per round.
    pub p50: Spread,
    pub p99: Spread,
    pub rss: u64,
}

/// One plugin of the Python comparison (hello-world in Rust and in Python).
pub struct PythonRow {
    pub label: &'static str,
    /// Milliseconds at concurrency 1, one value per round.
    pub p50: Spread,
    pub per_second: Spread,
    /// The plugin process's resident memory after its tasks.
    pub rss: u64,
}

pub struct Floor {
    pub db: Db,
    /// Milliseconds.
    pub invoke_p50: Spread,
    pub invoke_p99: Spread,
    pub invoke_per_second: Spread,
    /// Milliseconds.
    pub store_p50: Spread,
    pub store_per_second: Spread,
}

pub struct ReadRow {
    pub what: &'static str,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub alone_p50: Duration,
    pub alone_p99: Duration,
}

pub struct StatusAt {
    pub tasks: u64,
    pub first_p50: Duration,
    pub first_p99: Duration,
    pub busy_per_second: f64,
    pub busy_p99: Duration,
}

#[derive(Default)]
pub struct Growth {
    pub idle: Vec<Idle>,
    /// Plugins loaded, concurrency, tasks/s.
    pub loaded: Option<(usize, usize, Spread)>,
    pub status: Vec<StatusAt>,
}

/// One shape of the scale-out run: gateways × plugin hosts.
#[derive(Default)]
pub struct ScaleRow {
    pub gateways: usize,
    pub hosts: usize,
    pub per_second: Spread,
    pub p50: Spread,
    pub p99: Spread,
    /// CPU milliseconds per task spent by the gateways.
    pub gateway_cpu_ms: Spread,
    /// CPU milliseconds per task spent by the hosts (supervisors and plugins).
    pub host_cpu_ms: Spread,
}

pub struct Report {
    sizes: Sizes,
    smoke: bool,
    pub postgres_version: String,
    pub end_to_end: Vec<EndToEnd>,
    pub floors: Vec<Floor>,
    pub reads: Vec<(Db, Vec<ReadRow>)>,
    pub lifecycle: Vec<(&'static str, Lifecycle)>,
    pub python: Vec<PythonRow>,
    pub streaming: Option<Streaming>,
    pub growth: Option<Growth>,
    pub scale: Vec<ScaleRow>,
}

/// The server's version, or why it is unknown.
pub async fn postgres_version(url: &str) -> String {
    use sqlx::Connection;
    let Ok(mut connection) = sqlx::postgres::PgConnection::connect(url).await else {
        return "unknown (not reachable)".into();
    };
    sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(&mut connection)
        .await
        .unwrap_or_else(|_| "unknown".into())
}

/// A Markdown table's header row and its separator.
fn table_head(out: &mut String, header: &str) {
    let columns = header.matches('|').count().saturating_sub(1);
    let _ = writeln!(out, "{header}\n|{}", "---|".repeat(columns));
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.0} GiB", kib as f64 / 1048576.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |release| release.trim().to_owned());
    format!("{cores} cores ({cpu}), {memory} of memory, Linux {kernel}")
}

impl Report {
    pub fn new(sizes: Sizes, smoke: bool) -> Self {
        Self {
            sizes,
            smoke,
            postgres_version: String::new(),
            end_to_end: Vec::new(),
            floors: Vec::new(),
            reads: Vec::new(),
            lifecycle: Vec::new(),
            python: Vec::new(),
            streaming: None,
            growth: None,
            scale: Vec::new(),
        }
    }

    fn row(&self, db: Db, client: Client, concurrency: usize) -> Option<&EndToEnd> {
        self.end_to_end
            .iter()
            .find(|row| row.db == db && row.client == client && row.concurrency == concurrency)
    }

    fn parallel(&self) -> usize {
        *self.sizes.concurrencies.last().unwrap_or(&1)
    }

    /// End to end ÷ floor at concurrency 1 (latency) and in parallel (time per task).
    fn ratios(&self, db: Db) -> Option<(f64, f64)> {
        let floor = self.floors.iter().find(|floor| floor.db == db)?;
        let alone = self.row(db, Client::Events, 1)?;
        let busy = self.row(db, Client::Events, self.parallel())?;
        let latency = alone.p50.median() / (floor.invoke_p50.median() + floor.store_p50.median());
        let floor_per_task =
            1.0 / floor.invoke_per_second.median() + 1.0 / floor.store_per_second.median();
        let throughput = (1.0 / busy.per_second.median()) / floor_per_task;
        Some((latency, throughput))
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.goals(&mut out);
        self.end_to_end_section(&mut out);
        self.floor_section(&mut out);
        self.reads_section(&mut out);
        self.lifecycle_section(&mut out);
        self.streaming_section(&mut out);
        self.growth_section(&mut out);
        self.python_section(&mut out);
        self.scale_section(&mut out);
        out.push_str(include_str!("../analysis.md"));
        out
    }

    fn header(&self, out: &mut String) {
        let _ = writeln!(out, "# Benchmarks\n");
        if self.smoke {
            let _ = writeln!(
                out,
                "> **Smoke run** (`--smoke`): every section ran with tiny sizes to check that \
                 the suite works. These figures mean nothing.\n"
            );
        }
        let _ = writeln!(
            out,
            "Written by `scripts/bench` (the `corral-bench` binary of `bench/`) on {}, at commit {}. \
             Every figure below comes from that one run; nothing here is edited by hand except \
             the last section.\n",
            command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command_line("git", &["rev-parse", "--short", "HEAD"]),
        );
        let _ = writeln!(
            out,
            "- **Machine:** {}. The load generator, PostgreSQL, the gateway, the supervisor \
             and the plugins all share these cores, as the old runner's figures did.",
            machine()
        );
        let _ = writeln!(
            out,
            "- **Software:** {}, PostgreSQL {} (defaults: `fsync` and `synchronous_commit` on), \
             SQLite (bundled, WAL, `synchronous = NORMAL`). Release build.",
            command_line("rustc", &["-V"]),
            self.postgres_version
        );
        let _ = writeln!(
            out,
            "- **System under test:** `corral supervisor` and `corral gateway` as separate \
             processes (so each one's memory is its own) with their default settings and \
             logging at `info`, over real plugin processes.",
        );
        let _ = writeln!(
            out,
            "- **Clients:** Rust, one keep-alive HTTP/1.1 connection per worker. *Polling* \
             submits and then `GET`s the task every 10 ms until `SUCCESS`, as \
             `taskbench.py` (the old runner's client) does; *event stream* submits and then \
             reads `GET /tasks/<id>/events` until it ends. Latency is submit → `SUCCESS` seen.",
        );
        let _ = writeln!(
            out,
            "- **Spread:** figures measured {} times are shown as `median (min–max)`; p50 and \
             p99 are nearest-rank percentiles of every task of a round (the median over rounds).\n",
            self.sizes.rounds
        );
    }

    fn goals(&self, out: &mut String) {
        let _ = writeln!(out, "## Goals\n");
        table_head(out, "| goal | target | measured | met | old runner |");
        let mut goal = |name: &str, target: &str, measured: Option<(String, bool)>, old: &str| {
            let (value, met) = match measured {
                Some((value, met)) => (value, if met { "yes" } else { "**no**" }),
                None => ("not measured".into(), "—"),
            };
            let _ = writeln!(out, "| {name} | {target} | {value} | {met} | {old} |");
        };
        let parallel = self.parallel();
        goal(
            "end to end, concurrency 1, PostgreSQL, p50",
            "≤ 2 ms",
            self.row(Db::Postgres, Client::Events, 1).map(|row| {
                (
                    format!("{:.2} ms", row.p50.median()),
                    row.p50.median() <= 2.0,
                )
            }),
            "27 ms",
        );
        goal(
            &format!("end to end, concurrency {parallel}, PostgreSQL"),
            "≥ 2,000 tasks/s",
            self.row(Db::Postgres, Client::Events, parallel).map(|row| {
                (
                    format!("{:.0} tasks/s", row.per_second.median()),
                    row.per_second.median() >= 2000.0,
                )
            }),
            "5.5 tasks/s at 16",
        );
        goal(
            "end to end ÷ floor (PostgreSQL)",
            "≤ 1.5",
            self.ratios(Db::Postgres).map(|(latency, throughput)| {
                (
                    format!(
                        "{latency:.2} (latency, c=1); {throughput:.2} (time per task, c={parallel})"
                    ),
                    latency <= 1.5 && throughput <= 1.5,
                )
            }),
            "—",
        );
        let read = |what: &str| {
            self.reads
                .iter()
                .find(|(db, _)| *db == Db::Postgres)
                .and_then(|(_, rows)| rows.iter().find(|row| row.what.contains(what)))
        };
        goal(
            "`GET /plugins/`",
            "≥ 40,000 req/s",
            read("/plugins/`").map(|row| {
                (
                    format!("{:.0} req/s", row.per_second),
                    row.per_second >= 40_000.0,
                )
            }),
            "3,100 req/s",
        );
        goal(
            "finished `GET /tasks/<id>/` (PostgreSQL)",
            "≥ 15,000 req/s",
            read("finished").map(|row| {
                (
                    format!("{:.0} req/s", row.per_second),
                    row.per_second >= 15_000.0,
                )
            }),
            "900 req/s",
        );
        let rust = self
            .lifecycle
            .iter()
            .find(|(label, _)| label.contains("Rust"));
        goal(
            "spawn → healthy, Rust plugin, p50",
            "≤ 10 ms",
            rust.map(|(_, measured)| {
                let mut start = measured.start.clone();
                (ms(start.p50()), start.p50() <= Duration::from_millis(10))
            }),
            "—",
        );
        goal(
            "SIGKILL → healthy, Rust plugin, p50",
            "≤ 20 ms + backoff (0)",
            rust.map(|(_, measured)| {
                let mut kill = measured.kill.clone();
                (ms(kill.p50()), kill.p50() <= Duration::from_millis(20))
            }),
            "—",
        );
        goal(
            &format!("{} streamed", mib(self.sizes.stream_bytes)),
            "≥ 500 MB/s, gateway RSS growth ≤ 32 MB",
            self.streaming.as_ref().map(|streaming| {
                let growth = streaming.peak_rss.saturating_sub(streaming.rss_before);
                (
                    format!(
                        "{:.0} MB/s in, {:.0} MB/s out, RSS +{}",
                        streaming.write_mb_s,
                        streaming.read_mb_s,
                        mib(growth)
                    ),
                    streaming.write_mb_s >= 500.0
                        && streaming.read_mb_s >= 500.0
                        && growth <= 32_000_000,
                )
            }),
            "—",
        );
        let growth = self.growth.as_ref();
        goal(
            "supervisor RSS with the most plugins",
            "≤ 30 MB with 100",
            growth.and_then(|growth| growth.idle.last()).map(|idle| {
                (
                    format!("{} with {}", mib(idle.rss), idle.plugins),
                    idle.rss <= 30_000_000,
                )
            }),
            "290 MB (server and workers)",
        );
        goal(
            "finished task status, first read, p50, fewest → most tasks stored",
            "flat (≤ 1.25×)",
            growth.and_then(|growth| {
                let (first, last) = (growth.status.first()?, growth.status.last()?);
                let ratio = last.first_p50.as_secs_f64() / first.first_p50.as_secs_f64();
                Some((
                    format!(
                        "{} at {} → {} at {} ({ratio:.2}×)",
                        ms(first.first_p50),
                        first.tasks,
                        ms(last.first_p50),
                        last.tasks
                    ),
                    ratio <= 1.25,
                ))
            }),
            "—",
        );
        let loopback = self
            .reads
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|row| row.alone_p99))
            .chain(
                self.floors
                    .iter()
                    .map(|floor| Duration::from_secs_f64(floor.invoke_p99.median() / 1e3)),
            )
            .max();
        goal(
            "p99 of a lone loopback call (REST reads, gRPC invoke)",
            "≤ 1 ms (no Nagle delays)",
            loopback.map(|worst| {
                (
                    format!("worst {}", ms(worst)),
                    worst <= Duration::from_millis(1),
                )
            }),
            "—",
        );
        out.push('\n');
    }

    fn scale_section(&self, out: &mut String) {
        if self.scale.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## 8. Several gateways and plugin hosts
"
        );
        let _ = writeln!(
            out,
            "hello-world end to end (event stream) at concurrency {}, {} tasks per round, the \
             workers spread over the gateways in turn; PostgreSQL, Redis for the events; with \
             two hosts every call goes through a host's supervisor (the plugin proxy). Every \
             process shares this machine's cores, so more processes cannot mean more tasks per \
             second here: the CPU per task shows what each shape costs.\n",
            self.parallel(),
            self.sizes.scale_tasks
        );
        table_head(
            out,
            "| gateways | hosts | tasks/s | p50 ms | p99 ms | gateway CPU ms/task | host CPU ms/task |",
        );
        for row in &self.scale {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.gateways,
                row.hosts,
                row.per_second.show(0),
                row.p50.show(2),
                row.p99.show(2),
                row.gateway_cpu_ms.show(3),
                row.host_cpu_ms.show(3)
            );
        }
        out.push('\n');
    }

    fn end_to_end_section(&self, out: &mut String) {
        if self.end_to_end.is_empty() {
            return;
        }
        let _ = writeln!(out, "## 1. End to end: hello-world, submit → `SUCCESS`\n");
        let _ = writeln!(
            out,
            "Tasks per round: {} at concurrency 1 ({} when polling), {} above. Gateway RSS \
             is read after the rounds.\n",
            self.sizes.tasks_c1, self.sizes.tasks_polling_c1, self.sizes.tasks_parallel
        );
        table_head(
            out,
            "| database | client | concurrency | tasks/s | p50 ms | p99 ms | gateway RSS |",
        );
        for row in &self.end_to_end {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.db.name(),
                row.client.name(),
                row.concurrency,
                row.per_second.show(0),
                row.p50.show(2),
                row.p99.show(2),
                mib(row.rss)
            );
        }
        out.push('\n');
    }

    fn floor_section(&self, out: &mut String) {
        if self.floors.is_empty() {
            return;
        }
        let _ = writeln!(out, "## 2. The floor, in the same run\n");
        let _ = writeln!(
            out,
            "- *Direct invoke:* hello-world's `Invoke` over gRPC from the benchmark, no \
             gateway, read to its `Result`.\n\
             - *Store floor:* the least a task must make durable, written by the gateway's \
             own `Store` with nothing around it: the task row (committed before the client \
             gets its URL), then the task's end with its log line and its output (12 bytes, \
             kept in the file's row): one statement on PostgreSQL, one transaction on \
             SQLite.\n\
             - *Ratio:* end to end (event stream) ÷ (direct invoke + store floor): p50 at \
             concurrency 1, and time per task (1 / throughput) in parallel.\n"
        );
        table_head(
            out,
            &format!(
                "| database | invoke p50 | invoke p99 | invoke/s (c={0}) | store p50 | store tasks/s (c={0}) | ratio c=1 | ratio c={0} |",
                self.parallel()
            ),
        );
        for floor in &self.floors {
            let (latency, throughput) = self
                .ratios(floor.db)
                .map_or(("—".into(), "—".into()), |(latency, throughput)| {
                    (format!("{latency:.2}"), format!("{throughput:.2}"))
                });
            let _ = writeln!(
                out,
                "| {} | {} ms | {} ms | {} | {} ms | {} | {latency} | {throughput} |",
                floor.db.name(),
                floor.invoke_p50.show(3),
                floor.invoke_p99.show(3),
                floor.invoke_per_second.show(0),
                floor.store_p50.show(3),
                floor.store_per_second.show(0),
            );
        }
        out.push('\n');
    }

    fn reads_section(&self, out: &mut String) {
        if self.reads.is_empty() {
            return;
        }
        let _ = writeln!(out, "## 3. Reads\n");
        let _ = writeln!(
            out,
            "{:.1} s at concurrency 64, then {:.1} s at concurrency 1 (the lone-call p99 \
             shows Nagle delays, if any).\n",
            self.sizes.read_for.as_secs_f64(),
            self.sizes.read_for.as_secs_f64() / 2.0
        );
        table_head(
            out,
            "| database | request | req/s (c=64) | p50 | p99 | p50 (c=1) | p99 (c=1) |",
        );
        for (db, rows) in &self.reads {
            for row in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {} |",
                    db.name(),
                    row.what,
                    row.per_second,
                    ms(row.p50),
                    ms(row.p99),
                    ms(row.alone_p50),
                    ms(row.alone_p99)
                );
            }
        }
        out.push('\n');
    }

    fn lifecycle_section(&self, out: &mut String) {
        if self.lifecycle.is_empty() {
            return;
        }
        let _ = writeln!(out, "## 4. Plugin lifecycle\n");
        let _ = writeln!(
            out,
            "{} runs each, timed on the supervisor's watch stream. Start: an operator's \
             `StartPlugin` → registered and healthy. Kill: SIGKILL → registered and healthy \
             again, with a backoff of 0.\n",
            self.sizes.lifecycle_runs
        );
        table_head(
            out,
            "| plugin | start p50 | start min–max | kill p50 | kill min–max |",
        );
        for (label, measured) in &self.lifecycle {
            let (mut start, mut kill) = (measured.start.clone(), measured.kill.clone());
            let _ = writeln!(
                out,
                "| {label} | {} | {}–{} | {} | {}–{} |",
                ms(start.p50()),
                ms(start.quantile(0.0)),
                ms(start.quantile(1.0)),
                ms(kill.p50()),
                ms(kill.quantile(0.0)),
                ms(kill.quantile(1.0)),
            );
        }
        out.push('\n');
    }

    fn python_section(&self, out: &mut String) {
        if self.python.is_empty() {
            return;
        }
        let _ = writeln!(out, "## 7. Python plugins\n");
        let _ = writeln!(
            out,
            "hello-world and hello-world-python (the same plugin on the Python SDK, \
             `sdk-python`) through one gateway on SQLite, event-stream client, {} rounds: \
             {} tasks alone, then {} at concurrency {}. RSS: the plugin process after its \
             tasks.\n",
            self.sizes.rounds,
            self.sizes.tasks_c1,
            self.sizes.tasks_parallel,
            self.sizes.python_concurrency
        );
        table_head(
            out,
            &format!(
                "| plugin | p50 c=1 | tasks/s c={} | plugin RSS |",
                self.sizes.python_concurrency
            ),
        );
        for row in &self.python {
            let _ = writeln!(
                out,
                "| hello-world ({}) | {} ms | {} | {} |",
                row.label,
                row.p50.show(2),
                row.per_second.show(0),
                mib(row.rss)
            );
        }
        out.push('\n');
    }

    fn streaming_section(&self, out: &mut String) {
        let Some(streaming) = &self.streaming else {
            return;
        };
        let _ = writeln!(out, "## 5. Streaming\n");
        let _ = writeln!(
            out,
            "The `bulk` example plugin writes one output of {} in 1 MiB chunks; the gateway \
             stores it in its local file store (SQLite for the rows), then a client downloads \
             it. MB are 10^6 bytes.\n",
            mib(streaming.bytes)
        );
        table_head(
            out,
            "| plugin → file store | file store → client | gateway RSS before | gateway peak RSS | growth |",
        );
        let _ = writeln!(
            out,
            "| {:.0} MB/s | {:.0} MB/s | {} | {} | {} |\n",
            streaming.write_mb_s,
            streaming.read_mb_s,
            mib(streaming.rss_before),
            mib(streaming.peak_rss),
            mib(streaming.peak_rss.saturating_sub(streaming.rss_before))
        );
    }

    fn growth_section(&self, out: &mut String) {
        let Some(growth) = &self.growth else {
            return;
        };
        let _ = writeln!(out, "## 6. Growth\n");
        let _ = writeln!(
            out,
            "Supervisor alone (hello-world and copies of the `versioned` example), idle for \
             {:.1} s after all are ready:\n",
            self.sizes.idle_window.as_secs_f64()
        );
        table_head(out, "| plugins | supervisor RSS | supervisor idle CPU |");
        for idle in &growth.idle {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} % of a core |",
                idle.plugins,
                mib(idle.rss),
                idle.cpu_percent
            );
        }
        if let Some((plugins, concurrency, per_second)) = &growth.loaded {
            let _ = writeln!(
                out,
                "\nEnd to end with {plugins} plugins loaded (PostgreSQL, event stream, \
                 concurrency {concurrency}): {} tasks/s.\n",
                per_second.show(0)
            );
        }
        let _ = writeln!(
            out,
            "Status of a finished task with many stored (PostgreSQL). *First read*: {} \
             different tasks spread over all, each read once, one at a time (no cache has \
             seen them). *Hot*: one task at concurrency 64.\n",
            self.sizes.status_samples
        );
        table_head(
            out,
            "| finished tasks stored | first read p50 | first read p99 | hot req/s | hot p99 |",
        );
        for status in &growth.status {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} |",
                status.tasks,
                ms(status.first_p50),
                ms(status.first_p99),
                status.busy_per_second,
                ms(status.busy_p99)
            );
        }
        out.push('\n');
    }
}

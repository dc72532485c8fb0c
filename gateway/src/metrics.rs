//! `/metrics`: tasks, plugins, hosts, gateways, HTTP requests, build and
//! process, in the Prometheus text format 0.0.4 (or OpenMetrics 1.0 when the
//! scraper asks for it).
//!
//! Every series about a plugin carries the same two labels, `identifier`
//! (`hello-world@v0-2-1`) and `plugin_folder` (`hello-world`), so task series
//! and plugin series join on them. Values that only grow are counters
//! (`…_total`); a plugin's state is a full gauge set (one series per state, 1
//! for the current one).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};

use crate::{directory::PluginTable, error::ApiError, state::AppState};

/// Every state a plugin can be in, as [`crate::directory::state_name`] names them.
const PLUGIN_STATES: [&str; 6] = [
    "stopped", "starting", "ready", "backoff", "stopping", "failed",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    identifier: String,
    plugin_folder: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    identifier: String,
    plugin_folder: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnfinishedLabels {
    identifier: String,
    plugin_folder: String,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginHostLabels {
    identifier: String,
    plugin_folder: String,
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStateLabels {
    identifier: String,
    plugin_folder: String,
    host: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    gateway: String,
    url: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 64 hours (0.001 × 2.5^21 s).
    Histogram::new(exponential_buckets(0.001, 2.5, 22))
}

fn request_histogram() -> Histogram {
    // 0.1 ms to about 26 s (0.0001 × 2^18 s).
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The gateway's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    tasks: Family<TaskLabels, Counter>,
    calls_running: Gauge,
    task_seconds: Histograms<PluginLabels>,
    invoke_seconds: Histograms<PluginLabels>,
    unfinished: Family<UnfinishedLabels, Gauge>,
    plugin_state: Family<PluginStateLabels, Gauge>,
    plugin_restarts: Family<PluginHostLabels, Counter>,
    plugin_in_flight: Family<PluginHostLabels, Gauge>,
    host_connected: Family<HostLabels, Gauge>,
    host_draining: Family<HostLabels, Gauge>,
    gateway_running: Family<GatewayLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    process: Arc<ProcessCollector>,
    /// Scrapes one at a time: each clears and refills the series it reads
    /// from the plugin table and the database.
    scraping: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<TaskLabels, Counter>::default();
        registry.register(
            "corral_tasks",
            "Tasks that ended, by plugin and status",
            tasks.clone(),
        );
        let calls_running = Gauge::default();
        registry.register(
            "corral_calls_running",
            "Calls of tasks this gateway runs now (tasks waiting for a step run none)",
            calls_running.clone(),
        );
        let task_seconds: Histograms<PluginLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "corral_task_duration_seconds",
            "Time from a task's creation to its end",
            task_seconds.clone(),
        );
        let invoke_seconds: Histograms<PluginLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "corral_invoke_latency_seconds",
            "Time from invoking a plugin to its answer with the event stream",
            invoke_seconds.clone(),
        );
        let unfinished = Family::<UnfinishedLabels, Gauge>::default();
        registry.register(
            "corral_tasks_unfinished",
            "Unfinished tasks in the database by phase: running (a call runs) or waiting (for a step)",
            unfinished.clone(),
        );
        let plugin_state = Family::<PluginStateLabels, Gauge>::default();
        registry.register(
            "corral_plugin_state",
            "Each plugin's state: 1 for the state it is in, 0 for the others",
            plugin_state.clone(),
        );
        let plugin_restarts = Family::<PluginHostLabels, Counter>::default();
        registry.register(
            "corral_plugin_restarts",
            "Starts of each plugin after its first, since its host's supervisor started",
            plugin_restarts.clone(),
        );
        let plugin_in_flight = Family::<PluginHostLabels, Gauge>::default();
        registry.register(
            "corral_plugin_calls_in_flight",
            "This gateway's calls running on each plugin of each host",
            plugin_in_flight.clone(),
        );
        let host_connected = Family::<HostLabels, Gauge>::default();
        registry.register(
            "corral_host_connected",
            "1 while a plugin host's supervisor is followed",
            host_connected.clone(),
        );
        let host_draining = Family::<HostLabels, Gauge>::default();
        registry.register(
            "corral_host_draining",
            "1 while a plugin host is drained (it gets no new task)",
            host_draining.clone(),
        );
        let gateway_running = Family::<GatewayLabels, Gauge>::default();
        registry.register(
            "corral_gateway_running_tasks",
            "Running tasks owned by each gateway with a live lease on the database",
            gateway_running.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "corral_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_seconds: Histograms<RouteLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "corral_http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers), by method and route template",
            request_seconds.clone(),
        );
        registry.register(
            "corral_build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let process = Arc::new(ProcessCollector::default());
        registry.register_collector(Box::new(process.clone()));
        Self {
            registry: Arc::new(registry),
            tasks,
            calls_running,
            task_seconds,
            invoke_seconds,
            unfinished,
            plugin_state,
            plugin_restarts,
            plugin_in_flight,
            host_connected,
            host_draining,
            gateway_running,
            requests,
            request_seconds,
            process,
            scraping: Arc::default(),
        }
    }
}

/// The folder of the plugin that serves `identifier`, when known.
fn folder_of(table: &PluginTable, identifier: &str) -> String {
    table
        .all()
        .iter()
        .find(|plugin| plugin.identifier == identifier)
        .map(|plugin| plugin.folder.clone())
        .unwrap_or_default()
}

impl Metrics {
    pub(crate) fn task_started(&self) {
        self.calls_running.inc();
    }

    pub(crate) fn task_ended(&self) {
        self.calls_running.dec();
    }

    pub(crate) fn task_finished(
        &self,
        table: &PluginTable,
        identifier: &str,
        status: &str,
        seconds: f64,
    ) {
        let plugin_folder = folder_of(table, identifier);
        self.tasks
            .get_or_create(&TaskLabels {
                identifier: identifier.to_owned(),
                plugin_folder: plugin_folder.clone(),
                status: status.to_owned(),
            })
            .inc();
        self.task_seconds
            .get_or_create(&PluginLabels {
                identifier: identifier.to_owned(),
                plugin_folder,
            })
            .observe(seconds.max(0.0));
    }

    pub(crate) fn invoked(&self, identifier: &str, plugin_folder: &str, seconds: f64) {
        self.invoke_seconds
            .get_or_create(&PluginLabels {
                identifier: identifier.to_owned(),
                plugin_folder: plugin_folder.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts an answered request.
    fn answered(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        self.request_seconds
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// A request's method as a label: the usual ones, else `other` (a client
/// cannot make up label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Layer around every route: counts and times each request by its route
/// template, and writes its access log line (at `info`, target
/// `corral::access`).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // The template (`/tasks/{task}/`), never the path: ids would make a
    // series each. Unrouted requests (404s, redirects) share one.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    tracing::info!(
        target: "corral::access",
        method,
        route = %route,
        status,
        latency_ms = seconds * 1000.0,
        "request"
    );
    state
        .runner
        .metrics
        .answered(method, route, status, seconds);
    response
}

/// How long a scrape waits for what the database says (leases, unfinished
/// tasks): without it, the rest is still served.
const DATABASE_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /metrics`.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let metrics = &state.runner.metrics;
    let _one_scrape_at_a_time = metrics.scraping.lock().await;
    let read = async { tokio::join!(state.store.gateways(), state.store.unfinished_by_plugin()) };
    let (gateways, unfinished) = match tokio::time::timeout(DATABASE_READ, read).await {
        Ok((gateways, unfinished)) => (gateways.unwrap_or_default(), unfinished.ok()),
        Err(_) => (Vec::new(), None),
    };
    let process = tokio::task::spawn_blocking(ProcessStats::read)
        .await
        .ok()
        .flatten();
    *metrics
        .process
        .stats
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) = process;
    metrics.plugin_state.clear();
    metrics.plugin_restarts.clear();
    metrics.plugin_in_flight.clear();
    metrics.host_connected.clear();
    metrics.host_draining.clear();
    metrics.gateway_running.clear();
    let table = state.directory.snapshot();
    for plugin in table.all() {
        let labels = PluginHostLabels {
            identifier: plugin.identifier.clone(),
            plugin_folder: plugin.folder.clone(),
            host: plugin.host.to_string(),
        };
        for name in PLUGIN_STATES {
            metrics
                .plugin_state
                .get_or_create(&PluginStateLabels {
                    identifier: plugin.identifier.clone(),
                    plugin_folder: plugin.folder.clone(),
                    host: plugin.host.to_string(),
                    state: name,
                })
                .set(i64::from(plugin.state == name));
        }
        metrics
            .plugin_restarts
            .get_or_create(&labels)
            .inc_by(u64::from(plugin.restarts));
        metrics
            .plugin_in_flight
            .get_or_create(&labels)
            .set(i64::try_from(plugin.in_flight).unwrap_or(i64::MAX));
    }
    // The database's unfinished tasks: every identifier that has any is
    // listed, and every plugin the gateway knows with 0 where it has none.
    metrics.unfinished.clear();
    if let Some(unfinished) = unfinished {
        for tasks in &unfinished {
            let plugin_folder = folder_of(&table, &tasks.plugin);
            for (phase, count) in [("running", tasks.running), ("waiting", tasks.waiting)] {
                metrics
                    .unfinished
                    .get_or_create(&UnfinishedLabels {
                        identifier: tasks.plugin.clone(),
                        plugin_folder: plugin_folder.clone(),
                        phase,
                    })
                    .set(count);
            }
        }
        for plugin in table
            .all()
            .iter()
            .filter(|plugin| !plugin.identifier.is_empty())
        {
            for phase in ["running", "waiting"] {
                let _zero_unless_set = metrics.unfinished.get_or_create(&UnfinishedLabels {
                    identifier: plugin.identifier.clone(),
                    plugin_folder: plugin.folder.clone(),
                    phase,
                });
            }
        }
    }
    for host in table.hosts() {
        let labels = HostLabels {
            host: host.url.to_string(),
        };
        metrics
            .host_connected
            .get_or_create(&labels)
            .set(i64::from(host.connected));
        metrics
            .host_draining
            .get_or_create(&labels)
            .set(i64::from(host.draining));
    }
    for gateway in gateways.iter().filter(|gateway| gateway.live == 1) {
        metrics
            .gateway_running
            .get_or_create(&GatewayLabels {
                gateway: gateway.id.clone(),
                url: gateway.url.clone(),
            })
            .set(gateway.running);
    }
    let mut body = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut body, &metrics.registry)
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    if wants_openmetrics(&headers) {
        return Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus_text(&body),
    )
        .into_response())
}

/// Whether the scraper's `Accept` asks for OpenMetrics (Prometheus does, with
/// the classic format as a fallback; most other readers do not).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|kind| {
            let mut parts = kind.split(';').map(str::trim);
            let is_openmetrics = parts.next() == Some("application/openmetrics-text");
            // `q=0` means "not this".
            let refused = parts.any(|part| part.replace(' ', "") == "q=0");
            is_openmetrics && !refused
        })
}

/// OpenMetrics text rewritten as the Prometheus text format 0.0.4: counter
/// and info families are named as their samples (`…_total`, `…_info`, info
/// becoming a gauge), and `# UNIT`, `…_created` and `# EOF` go.
fn prometheus_text(openmetrics: &str) -> String {
    let mut suffixes: std::collections::HashMap<&str, (&str, &str)> = Default::default();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            match kind {
                "counter" => suffixes.insert(name, ("_total", "counter")),
                "info" => suffixes.insert(name, ("_info", "gauge")),
                _ => None,
            };
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|prefix| line.starts_with(prefix));
        if let Some(prefix) = comment {
            let rest = &line[prefix.len()..];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match suffixes.get(name) {
                Some((suffix, kind)) if prefix == "# TYPE " => {
                    text.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
                }
                Some((suffix, _)) => text.push_str(&format!("{prefix}{name}{suffix} {tail}\n")),
                None => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or_default();
        let created = sample.strip_suffix("_created").is_some_and(|family| {
            suffixes
                .get(family)
                .is_some_and(|(suffix, _)| *suffix == "_total")
        });
        if !created {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The gateway process's own figures, read from `/proc` at each scrape.
#[derive(Debug, Default)]
struct ProcessCollector {
    stats: Mutex<Option<ProcessStats>>,
}

#[derive(Debug, Clone, Copy)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: i64,
    start_time_seconds: f64,
    threads: i64,
}

/// Clock ticks per second of `/proc`'s times (`USER_HZ`: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessStats {
    /// The figures of this process; `None` where `/proc` cannot tell (not Linux).
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
        let boot_time: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())?;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                let line = limits
                    .lines()
                    .find(|line| line.starts_with("Max open files"))?;
                line.split_whitespace().nth(3)?.parse().ok()
            })
            .unwrap_or(-1);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(-1, |entries| {
            i64::try_from(entries.count()).unwrap_or(i64::MAX)
        });
        // In kB whatever the page size.
        let resident_kib: i64 = std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|line| {
                line.strip_prefix("VmRSS:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })?;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            threads: field(20)? as i64,
            start_time_seconds: boot_time + field(22)? / TICKS_PER_SECOND,
            virtual_bytes: field(23)? as i64,
            resident_bytes: resident_kib * 1024,
            open_fds,
            max_fds,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = *self
            .stats
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
        else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                stats.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                stats.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                stats.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_text_names_counters_and_infos_as_their_samples() {
        let openmetrics = "# HELP corral_tasks Tasks.\n# TYPE corral_tasks counter\n\
                           corral_tasks_total{status=\"SUCCESS\"} 3\n\
                           corral_tasks_created{status=\"SUCCESS\"} 1.5\n\
                           # HELP corral_build The build.\n# TYPE corral_build info\n\
                           corral_build_info{version=\"1\"} 1\n\
                           # HELP x_seconds X.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                           x_seconds_sum 1.0\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP corral_tasks_total Tasks.\n# TYPE corral_tasks_total counter\n\
             corral_tasks_total{status=\"SUCCESS\"} 3\n\
             # HELP corral_build_info The build.\n# TYPE corral_build_info gauge\n\
             corral_build_info{version=\"1\"} 1\n\
             # HELP x_seconds X.\n# TYPE x_seconds histogram\nx_seconds_sum 1.0\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().expect("header"));
            wants_openmetrics(&headers)
        };
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!accept("text/plain"));
        assert!(!accept("*/*"));
        assert!(accept(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accept("application/openmetrics-text; q=0, text/plain"));
    }
}

//! `/metrics` in the Prometheus text format: plugin states, restarts and calls
//! in flight per host (from the supervisors' streams), hosts and gateways,
//! tasks by status, task duration, invoke latency, tasks in flight.

use std::sync::Arc;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginStateLabels {
    plugin: String,
    host: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginHostLabels {
    plugin: String,
    host: String,
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
struct TaskLabels {
    plugin: String,
    status: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 64 hours (0.001 × 2.5^21 s).
    Histogram::new(exponential_buckets(0.001, 2.5, 22))
}

/// The gateway's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    tasks: Family<TaskLabels, Counter>,
    in_flight: Gauge,
    task_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    invoke_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    plugin_state: Family<PluginStateLabels, Gauge>,
    plugin_restarts: Family<PluginHostLabels, Gauge>,
    plugin_in_flight: Family<PluginHostLabels, Gauge>,
    host_connected: Family<HostLabels, Gauge>,
    host_draining: Family<HostLabels, Gauge>,
    gateway_running: Family<GatewayLabels, Gauge>,
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
        let in_flight = Gauge::default();
        registry.register(
            "corral_tasks_in_flight",
            "Tasks being run now",
            in_flight.clone(),
        );
        let task_seconds: Family<PluginLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "corral_task_duration_seconds",
            "Time from a task's start to its end",
            task_seconds.clone(),
        );
        let invoke_seconds: Family<PluginLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "corral_invoke_latency_seconds",
            "Time from invoking a plugin to its answer with the event stream",
            invoke_seconds.clone(),
        );
        let plugin_state = Family::<PluginStateLabels, Gauge>::default();
        registry.register(
            "corral_plugin_state",
            "1 for the state each plugin is in",
            plugin_state.clone(),
        );
        let plugin_restarts = Family::<PluginHostLabels, Gauge>::default();
        registry.register(
            "corral_plugin_restarts",
            "How many times its host's supervisor started each plugin again",
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
        Self {
            registry: Arc::new(registry),
            tasks,
            in_flight,
            task_seconds,
            invoke_seconds,
            plugin_state,
            plugin_restarts,
            plugin_in_flight,
            host_connected,
            host_draining,
            gateway_running,
        }
    }
}

impl Metrics {
    pub(crate) fn task_started(&self) {
        self.in_flight.inc();
    }

    pub(crate) fn task_ended(&self) {
        self.in_flight.dec();
    }

    pub(crate) fn task_finished(&self, plugin: &str, status: &str, seconds: f64) {
        self.tasks
            .get_or_create(&TaskLabels {
                plugin: plugin.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.task_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    pub(crate) fn invoked(&self, plugin: &str, seconds: f64) {
        self.invoke_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(seconds);
    }
}

/// How long a scrape waits for the gateways' leases.
const GATEWAYS_READ: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = &state.runner.metrics;
    // The leases are the database's: without it, the rest is still served.
    let gateways = tokio::time::timeout(GATEWAYS_READ, state.store.gateways())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    metrics.plugin_state.clear();
    metrics.plugin_restarts.clear();
    metrics.plugin_in_flight.clear();
    metrics.host_connected.clear();
    metrics.host_draining.clear();
    metrics.gateway_running.clear();
    let table = state.directory.snapshot();
    for plugin in table.all() {
        let labels = PluginHostLabels {
            plugin: plugin.folder.clone(),
            host: plugin.host.to_string(),
        };
        metrics
            .plugin_state
            .get_or_create(&PluginStateLabels {
                plugin: plugin.folder.clone(),
                host: plugin.host.to_string(),
                state: plugin.state.clone(),
            })
            .set(1);
        metrics
            .plugin_restarts
            .get_or_create(&labels)
            .set(i64::from(plugin.restarts));
        metrics
            .plugin_in_flight
            .get_or_create(&labels)
            .set(i64::try_from(plugin.in_flight).unwrap_or(i64::MAX));
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
    let mut body = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut body, &metrics.registry)
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

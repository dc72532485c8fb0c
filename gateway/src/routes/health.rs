//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// How long the readiness check waits for the database.
const DATABASE_CHECK: Duration = Duration::from_secs(2);

/// Liveness: the process serves HTTP.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Readiness: whether this gateway can take tasks, and what it depends on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// `ok`, or why the database cannot be used.
    database: String,
    /// `ok` when some plugin host's supervisor is followed, else why not.
    supervisor: String,
    /// Every plugin host: its supervisor, whether it is followed or drained,
    /// its ready plugins and this gateway's calls on it.
    hosts: Vec<crate::directory::HostSummary>,
    /// Whether the gateway is shutting down (it takes no new task).
    shutting_down: bool,
    /// The gateway's lease id; empty while it has none (it lost its lease and
    /// joins again: it takes no new task meanwhile).
    lease: String,
    /// The fan-out of task events between gateways: `up`, `down` (followers
    /// read the database meanwhile) or `off` (no Redis configured).
    fan_out: &'static str,
}

/// Liveness: 200 while the process serves HTTP, whatever its dependencies say.
#[utoipa::path(get, path = "/health", operation_id = "getHealth", tag = "operations", security(()),
    responses((status = 200, description = "the process is alive", body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when the database answers, the supervisor's plugin list is
/// followed, the gateway holds a lease and is not shutting down; else 503
/// with `Retry-After`,
/// so a load balancer takes the gateway out and back by itself.
#[utoipa::path(get, path = "/ready", operation_id = "getReadiness", tag = "operations", security(()),
    responses((status = 200, description = "ready", body = Readiness),
        (status = 503, description = "not ready; the body says why",
            headers(("Retry-After" = u32, description = "seconds")), body = Readiness)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DATABASE_CHECK, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => format!("unavailable: {error}"),
        Err(_) => format!("unavailable: no answer within {DATABASE_CHECK:?}"),
    };
    let table = state.directory.snapshot();
    let supervisor = if table.connected() {
        "ok".to_owned()
    } else {
        "unavailable: the plugin list is not followed".to_owned()
    };
    let shutting_down = state.runner.shutdown_begun();
    let lease = state
        .runner
        .lease
        .holder()
        .map(|holder| holder.id.to_string())
        .unwrap_or_default();
    let fan_out = match state.runner.live.link() {
        None => "off",
        Some(link) if link.borrow().up => "up",
        Some(_) => "down",
    };
    let ready = database == "ok" && supervisor == "ok" && !shutting_down && !lease.is_empty();
    let body = Json(Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database,
        supervisor,
        hosts: table.hosts().to_vec(),
        shutting_down,
        lease,
        fan_out,
    });
    if ready {
        return body.into_response();
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

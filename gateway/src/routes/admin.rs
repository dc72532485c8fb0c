//! `/admin/plugins/…`: the supervisor's plugins, and starting, stopping and
//! restarting them (a token with the admin role, always).

use axum::{
    Json,
    extract::{Path, State},
};
use corral_proto::{
    admin::AdminApi,
    supervisor::v1::{ListPluginsRequest, PluginRef, PluginStatus},
};
use serde_json::{Value, json};

use crate::{
    directory::SupervisorLink,
    error::{ApiError, ErrorBody, ValidationErrorBody},
    state::AppState,
};

/// A connected Admin API client of each plugin host's supervisor the gateway
/// follows (or of the one named `only`), with its URL; 503 when none can be
/// reached.
async fn hosts(state: &AppState, only: Option<&str>) -> Result<Vec<(String, AdminApi)>, ApiError> {
    let table = state.directory.snapshot();
    let links: Vec<SupervisorLink> = table
        .hosts()
        .iter()
        .filter(|host| only.is_none_or(|only| *host.url == *only))
        .map(|host| SupervisorLink {
            url: host.url.to_string(),
            token: state.config.admin_token.clone(),
        })
        .collect();
    if links.is_empty() && only.is_some() {
        return Err(ApiError::NotFound("No such plugin host.".into()));
    }
    let connections = links.iter().map(|link| async move {
        match link.admin().await {
            Ok(client) => Some((link.url.clone(), client)),
            Err(error) => {
                tracing::warn!(supervisor = %link.url, %error, "supervisor unreachable");
                None
            }
        }
    });
    let connected: Vec<_> = futures::future::join_all(connections)
        .await
        .into_iter()
        .flatten()
        .collect();
    if connected.is_empty() {
        return Err(ApiError::Unavailable(
            "The supervisor cannot be reached.".into(),
        ));
    }
    Ok(connected)
}

/// A plugin as the admin routes show it.
pub(crate) fn plugin_json(status: &PluginStatus) -> Value {
    let state = crate::directory::state_name(status.state);
    json!({
        "plugin": status.plugin,
        "identifier": status.identifier,
        "state": state,
        "pid": status.pid,
        "restarts": status.restarts,
        "lastExitReason": status.last_exit_reason,
        "uptimeMs": status.uptime_ms,
        "error": status.error,
        "version": status.metadata.as_ref().map(|metadata| metadata.version.clone()),
    })
}

/// `GET /admin/plugins/` (open unless --require-auth): every plugin with its
/// state and how many unfinished tasks of its identifier wait for a step or
/// run; `unfinishedTasks` also names identifiers no plugin serves any more (an
/// old version can go once it has none).
#[utoipa::path(get, path = "/admin/plugins/", operation_id = "listSupervisedPlugins", security((), ("bearer" = [])), tag = "admin",
    responses((status = 200, description = "every plugin of the supervisor with its state and its waiting and running tasks; `unfinishedTasks` by identifier"),
        (status = 401, description = "with --require-auth, no valid token", body = ErrorBody),
        (status = 503, description = "the supervisor cannot be reached", body = ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut plugins = Vec::new();
    for (host, mut client) in hosts(&state, None).await? {
        let listed = match client.list_plugins(ListPluginsRequest {}).await {
            Ok(listed) => listed.into_inner().plugins,
            Err(status) => {
                tracing::warn!(supervisor = %host, %status, "failed to list a host's plugins");
                continue;
            }
        };
        plugins.extend(listed.into_iter().map(|status| (host.clone(), status)));
    }
    let unfinished = state.store.unfinished_by_plugin().await?;
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|(host, status)| {
            let counts = unfinished
                .iter()
                .find(|tasks| tasks.plugin == status.identifier);
            let mut plugin = plugin_json(status);
            plugin["host"] = json!(host);
            plugin["waitingTasks"] = json!(counts.map_or(0, |tasks| tasks.waiting));
            plugin["runningTasks"] = json!(counts.map_or(0, |tasks| tasks.running));
            plugin
        })
        .collect();
    let table = state.directory.snapshot();
    let gateways = state.store.gateways().await?;
    Ok(Json(json!({
        "plugins": plugins,
        "unfinishedTasks": unfinished,
        "hosts": table.hosts(),
        "gateways": gateways,
    })))
}

/// `POST /admin/plugins/<plugin>/<start|stop|restart>/`.
#[utoipa::path(post, path = "/admin/plugins/{plugin}/{action}/", operation_id = "actOnPlugin", tag = "admin", security(("bearer" = [])),
    params(("plugin" = String, Path), ("action" = String, Path, description = "start, stop or restart"),
        ("host" = Option<String>, Query, description = "the supervisor URL of the one plugin host to act on (default: every host that has the plugin)")),
    responses((status = 200, description = "the plugin's new state"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn act(
    State(state): State<AppState>,
    Path((plugin, action)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if !matches!(action.as_str(), "start" | "stop" | "restart") {
        return Err(ApiError::NotFound("Not found.".into()));
    }
    // On the one host named, else on every host that has the plugin.
    let mut changed = Vec::new();
    let mut refused = None;
    for (host, mut client) in hosts(&state, query.get("host").map(String::as_str)).await? {
        let reference = PluginRef {
            plugin: plugin.clone(),
        };
        let answer = match action.as_str() {
            "start" => client.start_plugin(reference).await,
            "stop" => client.stop_plugin(reference).await,
            _ => client.restart_plugin(reference).await,
        };
        match answer {
            Ok(status) => {
                let status = status.into_inner();
                tracing::info!(plugin = %status.plugin, %host, action = %action, "plugin changed by an operator");
                let mut json = plugin_json(&status);
                json["host"] = json!(host);
                changed.push(json);
            }
            Err(status) => refused = Some(status),
        }
    }
    let Some(first) = changed.first().cloned() else {
        return Err(ApiError::Grpc(refused.unwrap_or_else(|| {
            tonic::Status::not_found(format!("no host has plugin {plugin}"))
        })));
    };
    let mut answer = first;
    answer["hosts"] = json!(changed);
    Ok(Json(answer))
}

/// `GET /admin/tasks/?limit=N`: the newest tasks (default 20, at most 1000;
/// admin role).
#[utoipa::path(get, path = "/admin/tasks/", operation_id = "listRecentTasks", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "how many, newest first (default 20, at most 1000)")),
    responses((status = 200, description = "the newest tasks with their status"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "a limit that is not a number from 1 to 1000", body = ValidationErrorBody),
        (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn tasks(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.get("limit") {
        None => 20,
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| {
                ApiError::field(
                    crate::error::Location::Query,
                    "limit",
                    "Must be between 1 and 1000.",
                )
            })?,
    };
    let tasks = state.store.recent_tasks(limit).await?;
    Ok(Json(json!({ "tasks": tasks })))
}

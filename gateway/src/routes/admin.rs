//! `/admin/plugins/…`: the supervisor's plugins, and starting, stopping and
//! restarting them (a token with the admin role, always).

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use corral_proto::{
    admin::AdminApi,
    supervisor::v1::{ListPluginsRequest, PluginRef, PluginStatus},
};
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    directory::SupervisorLink,
    error::{ApiError, ErrorBody, FieldErrors, Location, ValidationErrorBody},
    ids,
    state::AppState,
    store::{TaskFilter, TaskSummary},
    urls::BaseUrl,
    views,
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
    Query(query): Query<HashMap<String, String>>,
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

/// How many tasks a page lists unless asked (at most [`MAX_PAGE`]).
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 1000;

/// `GET /admin/tasks/`: tasks newest first, filtered by plugin, status and
/// creation time, a page at a time (admin role).
#[utoipa::path(get, path = "/admin/tasks/", operation_id = "listTasks", tag = "admin", security(("bearer" = [])),
    params(("plugin" = Option<String>, Query, description = "one plugin identifier (`hello-world@v0-2-1`)"),
        ("status" = Option<String>, Query, description = "PENDING, RUNNING, WAITING (for a step), SUCCESS or FAILURE"),
        ("since" = Option<String>, Query, description = "created at or after: Unix milliseconds or RFC 3339"),
        ("until" = Option<String>, Query, description = "created before: Unix milliseconds or RFC 3339"),
        ("limit" = Option<i64>, Query, description = "how many (default 20, at most 1000)"),
        ("cursor" = Option<String>, Query, description = "from the `next` link of the previous page")),
    responses((status = 200, description = "`tasks`, newest first, and `next`: the URL of the next page, or null"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "a filter that cannot be read", body = ValidationErrorBody),
        (status = 503, description = "the database is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn tasks(
    State(state): State<AppState>,
    base: BaseUrl,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = task_filter(&query)?;
    let limit = filter.limit;
    // One more than asked: whether there is a next page.
    filter.limit += 1;
    let mut tasks = state.store.list_tasks(&filter).await?;
    let next = if tasks.len() as i64 > limit {
        tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        tasks.last().map(|last| {
            let mut next: Vec<(&str, String)> = query
                .iter()
                .filter(|(name, _)| name.as_str() != "cursor")
                .map(|(name, value)| (name.as_str(), value.clone()))
                .collect();
            next.sort();
            next.push(("cursor", format!("{}-{}", last.created_at, last.id)));
            let query = serde_urlencoded::to_string(next).unwrap_or_default();
            base.path(&format!("/admin/tasks/?{query}"))
        })
    } else {
        None
    };
    let tasks: Vec<Value> = tasks.iter().map(|task| summary_json(task, &base)).collect();
    Ok(Json(json!({ "tasks": tasks, "next": next })))
}

/// The filter a task list's query asks for; 422 naming every field that
/// cannot be read.
fn task_filter(query: &HashMap<String, String>) -> Result<TaskFilter, ApiError> {
    let mut errors = FieldErrors::new();
    let mut invalid = |field: &str, message: &str| {
        errors.insert(field.to_owned(), vec![message.to_owned()]);
    };
    let text = |name: &str| {
        query
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let mut filter = TaskFilter {
        plugin: text("plugin").map(str::to_owned),
        limit: DEFAULT_PAGE,
        ..TaskFilter::default()
    };
    if let Some(status) = text("status") {
        match status.parse() {
            Ok(status) => filter.status = Some(status),
            Err(()) => invalid(
                "status",
                "Must be one of: PENDING, RUNNING, WAITING, SUCCESS, FAILURE.",
            ),
        }
    }
    for (name, bound) in [("since", &mut filter.since), ("until", &mut filter.until)] {
        if let Some(time) = text(name) {
            match unix_millis(time) {
                Some(millis) => *bound = Some(millis),
                None => invalid(
                    name,
                    "Must be Unix milliseconds or an RFC 3339 time (2026-01-31T12:00:00Z).",
                ),
            }
        }
    }
    if let Some(limit) = text("limit") {
        match limit.parse::<i64>() {
            Ok(limit) if (1..=MAX_PAGE).contains(&limit) => filter.limit = limit,
            _ => invalid("limit", "Must be between 1 and 1000."),
        }
    }
    if let Some(cursor) = text("cursor") {
        let after = cursor
            .split_once('-')
            .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
            .filter(|(_, id)| ids::looks_like_id(id));
        match after {
            Some((at, id)) => filter.after = Some((at, id.to_owned())),
            None => invalid(
                "cursor",
                "Not a cursor of this list: follow the `next` link.",
            ),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(ApiError::Invalid(Location::Query, errors))
    }
}

/// Unix milliseconds, or an RFC 3339 time.
fn unix_millis(text: &str) -> Option<i64> {
    if let Ok(millis) = text.parse::<i64>() {
        return Some(millis);
    }
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let millis = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(millis).ok()
}

/// A task as an operator's list shows it.
fn summary_json(task: &TaskSummary, base: &BaseUrl) -> Value {
    let mut json = json!(task);
    json["href"] = json!(base.absolute(&format!("/tasks/{}/", task.id)));
    json["adminHref"] = json!(base.absolute(&format!("/admin/tasks/{}/", task.id)));
    json
}

/// The task's summary, or 404.
async fn summary(state: &AppState, task_id: &str) -> Result<TaskSummary, ApiError> {
    let not_found = || ApiError::NotFound("Task not found.".into());
    if !ids::looks_like_id(task_id) {
        return Err(not_found());
    }
    state
        .store
        .task_summary(task_id)
        .await?
        .ok_or_else(not_found)
}

/// `GET /admin/tasks/<id>/`: everything about a task (admin role).
#[utoipa::path(get, path = "/admin/tasks/{task}/", operation_id = "getTaskDetail", tag = "admin", security(("bearer" = [])),
    params(("task" = String, Path)),
    responses((status = 200, description = "the task as `GET /tasks/<id>/` shows it, with its inputs (secret fields hidden), phase, attempts, the gateway running it (`owner`), the plugin host of its last call, `retryOf` and `retries`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "the database is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn task(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(detail(&state, &task_id, &base).await?))
}

async fn detail(state: &AppState, task_id: &str, base: &BaseUrl) -> Result<Value, ApiError> {
    let summary = summary(state, task_id).await?;
    let record = state
        .store
        .task(task_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Task not found.".into()))?;
    let retries = state.store.retries_of(task_id).await?;
    let owner = match &summary.owner {
        Some(owner) => {
            let gateways = state.store.gateways().await?;
            let gateway = gateways.iter().find(|gateway| gateway.id == *owner);
            Some(json!({
                "id": owner,
                "url": gateway.map(|gateway| gateway.url.clone()),
                "live": gateway.is_some_and(|gateway| gateway.live == 1),
            }))
        }
        None => None,
    };
    let mut json = json!(views::task_status(&record, base));
    let summary_fields = summary_json(&summary, base);
    if let (Some(json), Some(summary)) = (json.as_object_mut(), summary_fields.as_object()) {
        json.extend(summary.clone());
    }
    let (_, inputs) = state.store.task_inputs(task_id).await?.unwrap_or_default();
    json["inputs"] = inputs_shown(state, &summary.plugin, &inputs);
    json["owner"] = json!(owner);
    json["retries"] = json!(retries);
    Ok(json)
}

/// A task's stored inputs, secrets hidden: the values of its plugin's
/// secret fields (when the plugin is ready to say which they are), and of
/// any field named like a secret.
fn inputs_shown(state: &AppState, plugin: &str, stored: &str) -> Value {
    let mut inputs: serde_json::Map<String, Value> =
        serde_json::from_str(stored).unwrap_or_default();
    let table = state.directory.snapshot();
    let secret = corral_proto::plugin::v1::FieldKind::Secret as i32;
    // Without the plugin's fields (it is not ready, or gone), no value is shown.
    let Some(live) = table.ready(plugin) else {
        for value in inputs.values_mut() {
            *value = json!("(hidden: the plugin is not ready to say which fields are secret)");
        }
        return Value::Object(inputs);
    };
    let secret_fields: Vec<&str> = live
        .metadata
        .inputs
        .iter()
        .filter(|field| field.kind == secret)
        .map(|field| field.field.as_str())
        .collect();
    for (name, value) in &mut inputs {
        let lower = name.to_ascii_lowercase();
        let named_secret = ["token", "password", "secret", "apikey", "api_key"]
            .iter()
            .any(|word| lower.contains(word));
        if named_secret || secret_fields.contains(&name.as_str()) {
            *value = json!("(secret)");
        }
    }
    Value::Object(inputs)
}

/// `POST /admin/tasks/<id>/cancel/`: ends an unfinished task `FAILURE`
/// "cancelled by …" at once; a running call's plugin is told (admin role).
#[utoipa::path(post, path = "/admin/tasks/{task}/cancel/", operation_id = "cancelTask", tag = "admin", security(("bearer" = [])),
    params(("task" = String, Path)),
    responses((status = 200, description = "the task, ended"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the task had ended", body = ErrorBody),
        (status = 503, description = "the database is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let summary = summary(&state, &task_id).await?;
    if summary.finished_at.is_some() {
        return Err(ApiError::Conflict("This task has ended.".into()));
    }
    let reason = format!("cancelled by {}", caller.name);
    // Its notices name it as its other ones do.
    let task_base = BaseUrl::new(summary.base_url.clone(), "");
    if !state.runner.cancel(&task_id, &reason, &task_base).await? {
        return Err(ApiError::Conflict("This task has ended.".into()));
    }
    tracing::info!(task = %task_id, by = %caller.name, "task cancelled by an operator");
    Ok(Json(detail(&state, &task_id, &base).await?))
}

/// `POST /admin/tasks/<id>/retry/`: a new task of the same plugin with the
/// same inputs, linked to the ended one (admin role).
#[utoipa::path(post, path = "/admin/tasks/{task}/retry/", operation_id = "retryTask", tag = "admin", security(("bearer" = [])),
    params(("task" = String, Path)),
    responses((status = 201, description = "the new task: `id`, `href`, `retryOf`; its URL in Location"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the task has not ended", body = ErrorBody),
        (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let summary = summary(&state, &task_id).await?;
    if summary.finished_at.is_none() {
        return Err(ApiError::Conflict(
            "This task has not ended: cancel it first, or wait for its end.".into(),
        ));
    }
    let Some((plugin, inputs)) = state.store.task_inputs(&task_id).await? else {
        return Err(ApiError::NotFound("Task not found.".into()));
    };
    let values = serde_json::from_str(&inputs).map_err(|_| {
        ApiError::Conflict("The task's stored inputs cannot be read; it cannot be retried.".into())
    })?;
    let live = super::plugins::ready_or_restarted(&state, &plugin).await?;
    let retry_of = Some(task_id.clone());
    // Its URLs as the old task's were made.
    let task_base = BaseUrl::new(summary.base_url.clone(), "");
    let new_id =
        super::plugins::start_task(&state, &live, values, &task_base, Vec::new(), retry_of).await?;
    let href = task_base.absolute(&format!("/tasks/{new_id}/"));
    tracing::info!(task = %new_id, retry_of = %task_id, by = %caller.name, "task retried by an operator");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, href.clone())],
        Json(json!({ "id": new_id, "href": href, "retryOf": task_id })),
    )
        .into_response())
}

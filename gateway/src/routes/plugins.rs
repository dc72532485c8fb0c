//! `/plugins/…`: the list, metadata, micro-frontends and task creation.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use corral_proto::plugin::v1::{PluginType, RenderRequest};

use super::body;
use crate::{
    directory::{LivePlugin, PluginTable, compare_versions},
    error::{
        ApiError, ErrorBody, FieldErrors, FormValues, JsonFormValues, MultipartFormValues,
        ValidationErrorBody,
    },
    forms, ids,
    runner::Job,
    state::AppState,
    store::NewTask,
    ui,
    urls::BaseUrl,
    views,
};

/// `GET /`.
#[utoipa::path(get, path = "/", operation_id = "getRoot", security((), ("bearer" = [])), tag = "runner", responses((status = 200, body = views::Root)))]
pub(crate) async fn root(State(state): State<AppState>) -> Json<views::Root> {
    Json(views::Root {
        title: state.config.title.clone(),
    })
}

/// `GET /plugins/`: ready plugins sorted by name, then version.
#[utoipa::path(get, path = "/plugins/", operation_id = "listPlugins", security((), ("bearer" = [])), tag = "plugins", responses((status = 200, body = views::PluginList)))]
pub(crate) async fn list(State(state): State<AppState>, base: BaseUrl) -> Json<views::PluginList> {
    let table = state.directory.snapshot();
    let plugins = table
        .sorted()
        .into_iter()
        .map(|plugin| views::plugin_entry(&plugin.identifier, &plugin.metadata, &base))
        .collect();
    Json(views::PluginList { plugins })
}

/// `GET /plugins/<identifier>/` (metadata) or `GET /plugins/<name>/` (302 to the
/// newest version).
#[utoipa::path(get, path = "/plugins/{plugin}/", operation_id = "getPlugin", security((), ("bearer" = [])), tag = "plugins",
    params(("plugin" = String, Path, description = "identifier (name@version) or name")),
    responses((status = 200, description = "metadata of a plugin identifier", body = views::PluginMetadata),
        (status = 302, description = "a plugin name: redirect to its newest version"),
        (status = 404, body = ErrorBody), (status = 503, description = "known but not ready", body = ErrorBody)))]
pub(crate) async fn plugin(
    State(state): State<AppState>,
    Path(plugin): Path<String>,
    base: BaseUrl,
) -> Result<Response, ApiError> {
    let table = state.directory.snapshot();
    if let Some(live) = table.ready(&plugin) {
        return Ok(Json(views::plugin_metadata(
            &live.identifier,
            &live.metadata,
            &base,
        ))
        .into_response());
    }
    let newest = table
        .sorted()
        .into_iter()
        .filter(|live| {
            live.metadata.name == plugin || live.metadata.name.replace('.', "-") == plugin
        })
        .max_by(|a, b| compare_versions(&a.metadata.version, &b.metadata.version));
    match newest {
        Some(live) => {
            let location = base.path(&format!("/plugins/{}/", live.identifier));
            Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
        }
        None => Err(not_found_or_unavailable(&table, &plugin)),
    }
}

/// `GET /plugins/<identifier>/ui/`: the form, prefilled from the query.
#[utoipa::path(get, path = "/plugins/{plugin}/ui/", operation_id = "getPluginUi", security((), ("bearer" = [])), tag = "plugins",
    params(("plugin" = String, Path)),
    responses((status = 200, description = "the micro-frontend", content_type = "text/html", body = String), (status = 404, body = ErrorBody),
        (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody) ))]
pub(crate) async fn ui_get(
    State(state): State<AppState>,
    Path(plugin): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    base: BaseUrl,
) -> Result<Html<String>, ApiError> {
    let live = ready(&state, &plugin)?;
    Ok(Html(
        page(&state, &live, &query, &FieldErrors::new(), &base).await,
    ))
}

/// `POST /plugins/<identifier>/ui/`: the form again, from the posted values,
/// with errors shown inline (always 200).
#[utoipa::path(post, path = "/plugins/{plugin}/ui/", operation_id = "renderPluginUi", security((), ("bearer" = [])), tag = "plugins",
    params(("plugin" = String, Path)),
    request_body(description = "the form's values so far",
        content((FormValues = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "the micro-frontend with inline errors", content_type = "text/html", body = String),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn ui_post(
    State(state): State<AppState>,
    Path(plugin): Path<String>,
    base: BaseUrl,
    request: Request,
) -> Result<Html<String>, ApiError> {
    let live = ready(&state, &plugin)?;
    let submitted = body::read(&state, request, body::Uploads::Skip).await?;
    let errors = forms::validate(&live.metadata.inputs, &submitted.values)
        .err()
        .unwrap_or_default();
    Ok(Html(
        page(&state, &live, &submitted.values, &errors, &base).await,
    ))
}

/// The ready plugins a form's PLUGIN fields may name (none when it has none).
pub(crate) fn plugin_choices(
    state: &AppState,
    fields: &[corral_proto::plugin::v1::FormField],
    base: &BaseUrl,
) -> Vec<ui::PluginChoice> {
    if !ui::names_plugins(fields) {
        return Vec::new();
    }
    state
        .directory
        .snapshot()
        .sorted()
        .into_iter()
        .map(|plugin| ui::PluginChoice {
            url: base.absolute(&format!("/plugins/{}/", plugin.identifier)),
            name: plugin.metadata.name.clone(),
            title: format!("{} ({})", plugin.metadata.title, plugin.metadata.version),
            tags: plugin.metadata.tags.clone(),
        })
        .collect()
}

async fn page(
    state: &AppState,
    live: &LivePlugin,
    values: &BTreeMap<String, String>,
    errors: &FieldErrors,
    base: &BaseUrl,
) -> String {
    let preview = if live.metadata.r#type == PluginType::Visualization as i32 && !values.is_empty()
    {
        let request = RenderRequest {
            inputs: values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        match live.client().render(request).await {
            Ok(response) => Some(response.into_inner().html),
            Err(status) if status.code() == tonic::Code::Unimplemented => None,
            Err(status) => Some(format!(
                "<p class=\"error\">The data could not be shown: {}</p>",
                ui::escape(status.message())
            )),
        }
    } else {
        None
    };
    ui::render(&ui::Page {
        title: &live.metadata.title,
        description: &live.metadata.description,
        fields: &live.metadata.inputs,
        values,
        errors,
        submit_url: &base.path(&format!("/plugins/{}/process/", live.identifier)),
        preview: preview.as_deref(),
        plugins: &plugin_choices(state, &live.metadata.inputs, base),
    })
}

/// `POST /plugins/<identifier>/process/`: validate, store the task, 303 to it.
#[utoipa::path(post, path = "/plugins/{plugin}/process/", operation_id = "submitTask", security((), ("bearer" = [])), tag = "tasks",
    params(("plugin" = String, Path)),
    request_body(description = "the plugin's form fields (urlencoded, multipart or JSON)",
        content((FormValues = "application/x-www-form-urlencoded"), (MultipartFormValues = "multipart/form-data"),
            (JsonFormValues = "application/json"))),
    responses((status = 303, description = "task created", headers(("Location" = String, description = "the task's URL"))),
        (status = 400, description = "a malformed body (e.g. broken multipart)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "invalid input; no task created", body = ValidationErrorBody),
        (status = 404, body = ErrorBody), (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn process(
    State(state): State<AppState>,
    Path(plugin): Path<String>,
    base: BaseUrl,
    request: Request,
) -> Result<Response, ApiError> {
    if state.runner.shutdown_begun() {
        return Err(ApiError::Unavailable(
            "The runner is shutting down; try again shortly.".into(),
        ));
    }
    let live = ready_or_restarted(&state, &plugin).await?;
    let submitted = body::read(&state, request, body::Uploads::Store).await?;
    let values = match forms::validate(&live.metadata.inputs, &submitted.values) {
        Ok(values) => values,
        Err(errors) => {
            submitted.discard_uploads(&state).await;
            return Err(ApiError::Invalid(submitted.location(), errors));
        }
    };
    if state.runner.lease.holder().is_none() {
        submitted.discard_uploads(&state).await;
        return Err(rejoining());
    }
    let uploads = submitted.uploads.clone();
    let task_id = start_task(&state, &live, values, &base, uploads, None).await?;
    Ok(Redirect::to(&base.absolute(&format!("/tasks/{task_id}/"))).into_response())
}

/// Starts a task of `live` with its checked `values` (and the files uploaded
/// with them; a retry of task `retry_of`, when given): committed, and its call
/// running, when this returns its id.
pub(crate) async fn start_task(
    state: &AppState,
    live: &LivePlugin,
    values: BTreeMap<String, String>,
    base: &BaseUrl,
    uploads: Vec<String>,
    retry_of: Option<String>,
) -> Result<String, ApiError> {
    let inputs =
        serde_json::to_string(&values).map_err(|error| ApiError::Internal(Box::new(error)))?;
    let Some(holder) = state.runner.lease.holder() else {
        return Err(rejoining());
    };
    let job = Job::start(
        ids::random_id(),
        live.identifier.clone(),
        values,
        base.clone(),
        &holder,
    );
    let task_id = job.task_id.clone();
    let base_url = base.absolute("");
    let state = state.clone();
    // Finished even if the client goes away: a committed task always gets its runner.
    tokio::spawn(async move {
        let _taking = state.runner.taking(&job.task_id);
        let task = NewTask {
            id: &job.task_id,
            plugin: &job.plugin,
            inputs: &inputs,
            base_url: &base_url,
            uploads: &uploads,
            owner: &holder.id,
            retry_of: retry_of.as_deref(),
        };
        state.store.create_task(&task).await?;
        tracing::info!(task = %job.task_id, plugin = %job.plugin, "task created");
        state.runner.spawn(job);
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(|error| ApiError::Internal(Box::new(error)))??;
    Ok(task_id)
}

/// The answer while the gateway has no lease (it lost one and joins again).
pub(crate) fn rejoining() -> ApiError {
    ApiError::Unavailable("The gateway is rejoining its cluster; try again shortly.".into())
}

/// How long a submission waits for a known plugin that is not ready (it is
/// restarting, or the supervisor is briefly away) before it is answered 503.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The ready plugin; a known one that is restarting is waited for (up to
/// [`RESTART_WAIT`]), so a restart never turns a submission away at once.
pub(crate) async fn ready_or_restarted(
    state: &AppState,
    identifier: &str,
) -> Result<Arc<LivePlugin>, ApiError> {
    if state.directory.snapshot().ready(identifier).is_some() {
        return ready(state, identifier);
    }
    // Until the supervisor's list has arrived and every plugin starting for
    // the first time has said who it is (a gateway or supervisor just
    // started), an identifier not known yet may still appear: wait for that.
    let table = state.directory.snapshot();
    if !table.knows(identifier) && table.may_learn_more() {
        let settled = state
            .directory
            .wait_for(|table| table.knows(identifier) || !table.may_learn_more());
        let _settled_or_not = tokio::time::timeout(RESTART_WAIT, settled).await;
        let table = state.directory.snapshot();
        if !table.knows(identifier) && table.may_learn_more() {
            return Err(ApiError::Unavailable(
                "The plugins are starting; try again shortly.".into(),
            ));
        }
    }
    let known_not_ready = {
        let table = state.directory.snapshot();
        table.ready(identifier).is_none() && table.unavailable_reason(identifier).is_some()
    };
    if known_not_ready {
        let back = state
            .directory
            .wait_for(|table| table.ready(identifier).is_some());
        let _ready_or_not = tokio::time::timeout(RESTART_WAIT, back).await;
    }
    ready(state, identifier)
}

/// The ready plugin, or 404 / 503 with a clear message.
/// (One snapshot answers both: a plugin that becomes ready meanwhile is
/// never taken for absent.)
pub(crate) fn ready(state: &AppState, identifier: &str) -> Result<Arc<LivePlugin>, ApiError> {
    let table = state.directory.snapshot();
    table
        .ready(identifier)
        .cloned()
        .ok_or_else(|| not_found_or_unavailable(&table, identifier))
}

fn not_found_or_unavailable(table: &PluginTable, plugin: &str) -> ApiError {
    if !table.knows(plugin) && !table.connected() {
        // Not known to be absent: the supervisor's list is not there.
        return ApiError::Unavailable(
            "The supervisor cannot be reached; try again shortly.".into(),
        );
    }
    match table.unavailable_reason(plugin) {
        Some(reason) => ApiError::Unavailable(format!(
            "Plugin {plugin} is not ready ({reason}); try again shortly."
        )),
        None => ApiError::NotFound("Plugin not found.".into()),
    }
}

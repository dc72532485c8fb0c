//! `/tasks/…` and a task's steps: status, webhooks, the event stream, step forms.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    response::{
        Html, IntoResponse, Redirect, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::Stream;
use tokio::sync::broadcast;

use super::body;
use crate::{
    error::{
        ApiError, ErrorBody, FieldErrors, FormValues, Location, SubscribeRequest,
        ValidationErrorBody,
    },
    forms, ids,
    live::LiveEvent,
    state::AppState,
    store::TaskRecord,
    ui,
    urls::BaseUrl,
    views,
};

async fn task(state: &AppState, task_id: &str) -> Result<std::sync::Arc<TaskRecord>, ApiError> {
    if !ids::looks_like_id(task_id) {
        return Err(ApiError::NotFound("Task not found.".into()));
    }
    state
        .store
        .task(task_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Task not found.".into()))
}

/// `GET /tasks/<id>/`.
#[utoipa::path(get, path = "/tasks/{task}/", tag = "tasks", params(("task" = String, Path)),
    responses((status = 200, body = views::TaskStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
) -> Result<Json<views::TaskStatus>, ApiError> {
    let task = task(&state, &task_id).await?;
    Ok(Json(views::task_status(&task, &base)))
}

/// `POST /tasks/<id>/`: subscribe or unsubscribe a webhook.
#[utoipa::path(post, path = "/tasks/{task}/", tag = "tasks", params(("task" = String, Path)),
    request_body = SubscribeRequest,
    responses((status = 200, body = views::TaskStatus), (status = 404, body = ErrorBody),
        (status = 422, body = ValidationErrorBody)))]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
    request: Request,
) -> Result<Json<views::TaskStatus>, ApiError> {
    let record = task(&state, &task_id).await?;
    let submitted = body::read(&state, request, body::Uploads::Skip).await?;
    let location = submitted.location();
    let mut errors = FieldErrors::new();
    let command = submitted.values.get("command").map(String::as_str);
    if !matches!(command, Some("subscribe" | "unsubscribe")) {
        errors.insert(
            "command".into(),
            vec!["Must be one of: subscribe, unsubscribe.".into()],
        );
    }
    let href = submitted
        .values
        .get("webhookHref")
        .cloned()
        .unwrap_or_default();
    let valid_href =
        url::Url::parse(&href).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
    if !valid_href {
        let message = if href.is_empty() {
            "Missing data for required field."
        } else {
            "Not a valid URL."
        };
        errors.insert("webhookHref".into(), vec![message.into()]);
    }
    let event = submitted
        .values
        .get("event")
        .map(String::as_str)
        .filter(|event| !event.is_empty());
    if !matches!(event, None | Some("status" | "steps" | "details")) {
        errors.insert(
            "event".into(),
            vec!["Must be one of: status, steps, details.".into()],
        );
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(location, errors));
    }
    if command == Some("subscribe") {
        state
            .store
            .subscribe(&task_id, &href, event.unwrap_or(""))
            .await?;
    } else {
        state.store.unsubscribe(&task_id, &href, event).await?;
    }
    Ok(Json(views::task_status(&record, &base)))
}

/// `GET /tasks/<id>/events`: Server-Sent Events of the task from now on, after a
/// `snapshot` of its status so far; the stream ends with the task. Events:
/// `snapshot`, `log`, `progress`, `step`, `output`, `status` (last).
#[utoipa::path(get, path = "/tasks/{task}/events", tag = "tasks", params(("task" = String, Path)),
    responses((status = 200, description = "Server-Sent Events", content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
) -> Result<Response, ApiError> {
    // Follow first, then read the snapshot: nothing falls in between.
    let receiver = state.runner.live.subscribe(&task_id);
    let record = match task(&state, &task_id).await {
        Ok(record) => record,
        Err(error) => {
            state.runner.live.forget(&task_id);
            return Err(error);
        }
    };
    let snapshot = SseEvent::default()
        .event("snapshot")
        .json_data(views::task_status(&record, &base))
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    let finished = record.finished_at.is_some();
    if finished {
        state.runner.live.forget(&task_id);
    }
    let stream = event_stream(snapshot, finished, receiver, state.runner.shutdown.clone());
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn event_stream(
    snapshot: SseEvent,
    finished: bool,
    mut receiver: broadcast::Receiver<LiveEvent>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |sender| async move {
        if sender.send(snapshot).await.is_err() || finished {
            return;
        }
        loop {
            let received = tokio::select! {
                received = receiver.recv() => received,
                // The client left, or the gateway is stopping: end the stream.
                () = sender.closed() => return,
                () = shutdown.cancelled() => return,
            };
            let event = match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => LiveEvent {
                    kind: "lagged",
                    data: serde_json::json!({"missed": missed}),
                },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let last = event.is_final();
            let sse = SseEvent::default()
                .event(event.kind)
                .data(event.data.to_string());
            if sender.send(sse).await.is_err() || last {
                return;
            }
        }
    })
}

/// A stream fed by a task that sends into a bounded channel.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(32);
    tokio::spawn(produce(sender));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(receiver), Ok)
}

/// `GET|POST /plugins/<identifier>/<task>/<step>-ui/` and `POST …/<step>-process/`.
#[utoipa::path(post, path = "/plugins/{plugin}/{task}/{step}/", tag = "tasks",
    params(("plugin" = String, Path), ("task" = String, Path),
        ("step" = String, Path, description = "`<stepId>-ui` (form) or `<stepId>-process` (submission)")),
    request_body(content = FormValues, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "step submitted; Location is the task"),
        (status = 200, description = "the step's form", content_type = "text/html", body = String),
        (status = 404, body = ErrorBody), (status = 422, body = ValidationErrorBody)))]
pub(crate) async fn step(
    State(state): State<AppState>,
    Path((plugin, task_id, route)): Path<(String, String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    base: BaseUrl,
    request: Request,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("Step not found.".into());
    let (step_id, action) = match (route.strip_suffix("-ui"), route.strip_suffix("-process")) {
        (Some(step_id), _) => (step_id.to_owned(), StepAction::Ui),
        (_, Some(step_id)) => (step_id.to_owned(), StepAction::Process),
        _ => return Err(not_found()),
    };
    let record = task(&state, &task_id).await.map_err(|_| not_found())?;
    if record.plugin != plugin {
        return Err(not_found());
    }
    let Some(step) = record.steps.iter().find(|step| step.step_id == step_id) else {
        return Err(not_found());
    };
    let fields = ui::decode_form(&step.form);
    let is_post = request.method() == axum::http::Method::POST;
    let submit_url = base.path(&format!("/plugins/{plugin}/{task_id}/{step_id}-process/"));
    match action {
        StepAction::Ui => {
            let (values, errors) = if is_post {
                let submitted = body::read(&state, request, body::Uploads::Skip).await?;
                let errors = forms::validate(&fields, &submitted.values)
                    .err()
                    .unwrap_or_default();
                (submitted.values, errors)
            } else {
                (query, FieldErrors::new())
            };
            let page = ui::render(&ui::Page {
                title: &step_id,
                description: "",
                fields: &fields,
                values: &values,
                errors: &errors,
                submit_url: &submit_url,
                preview: None,
            });
            Ok(Html(page).into_response())
        }
        StepAction::Process if !is_post => Err(ApiError::NotFound("Step not found.".into())),
        StepAction::Process => {
            if step.cleared || record.finished_at.is_some() {
                return Err(ApiError::field(
                    Location::Form,
                    "_schema",
                    "This step was already submitted.",
                ));
            }
            let submitted = body::read(&state, request, body::Uploads::Store).await?;
            let values = match forms::validate(&fields, &submitted.values) {
                Ok(values) => values,
                Err(errors) => {
                    submitted.discard_uploads(&state).await;
                    return Err(ApiError::Invalid(submitted.location(), errors));
                }
            };
            // Finished even if the client goes away: a cleared step always reaches
            // its plugin.
            let runner = state.runner.clone();
            let store = state.store.clone();
            let (task, step, step_base) = (task_id.clone(), step_id.clone(), base.clone());
            let cleared = tokio::spawn(async move {
                if !store.clear_step(&task, &step).await? {
                    return Ok(false);
                }
                runner
                    .submit_step(&task, &plugin, &step, values, &step_base)
                    .await?;
                Ok::<_, ApiError>(true)
            })
            .await
            .map_err(|error| ApiError::Internal(Box::new(error)))??;
            if !cleared {
                return Err(ApiError::field(
                    Location::Form,
                    "_schema",
                    "This step was already submitted.",
                ));
            }
            Ok(Redirect::to(&base.absolute(&format!("/tasks/{task_id}/"))).into_response())
        }
    }
}

enum StepAction {
    Ui,
    Process,
}

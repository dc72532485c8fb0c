//! `/tasks/…` and a task's steps: status, webhooks, the event stream, step forms.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{
        Html, IntoResponse, Redirect, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::Stream;
use tokio::sync::broadcast;

use super::body;
use crate::{
    error::{ApiError, ErrorBody, FieldErrors, FormValues, SubscribeRequest, ValidationErrorBody},
    forms, ids,
    live::LiveEvent,
    runner::Job,
    state::AppState,
    store::{Notices, Store, TaskRecord},
    ui,
    urls::BaseUrl,
    views::{self, TaskEvent},
    webhooks::WebhookEvent,
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
#[utoipa::path(get, path = "/tasks/{task}/", operation_id = "getTask", security((), ("bearer" = [])), tag = "tasks", params(("task" = String, Path)),
    responses((status = 200, body = views::TaskStatus), (status = 404, body = ErrorBody), (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
) -> Result<Json<views::TaskStatus>, ApiError> {
    let task = task(&state, &task_id).await?;
    Ok(Json(views::task_status(&task, &base)))
}

/// `POST /tasks/<id>/`: subscribe or unsubscribe a webhook.
#[utoipa::path(post, path = "/tasks/{task}/", operation_id = "subscribeToTask", security((), ("bearer" = [])), tag = "tasks", params(("task" = String, Path)),
    request_body = SubscribeRequest,
    responses((status = 200, body = views::TaskStatus), (status = 404, body = ErrorBody),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ValidationErrorBody), (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
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

/// How long a browser's `EventSource` waits before it reconnects.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// `GET /tasks/<id>/events`: the task's Server-Sent Events. Without
/// `Last-Event-ID`: a `snapshot` of the task so far, then its events as they
/// come; with it, exactly the events after that id, then the live ones. Every
/// event has an `id` (its position in the task's stored events); the stream
/// ends with `status`. A client that already has the `status` is answered 204
/// (an `EventSource` then stops reconnecting).
#[utoipa::path(get, path = "/tasks/{task}/events", operation_id = "followTaskEvents", security((), ("bearer" = [])), tag = "tasks",
    params(("task" = String, Path),
        ("Last-Event-ID" = Option<u64>, Header, description = "the id of the last event received; the stream resumes after it")),
    responses((status = 200, description = "Server-Sent Events: `snapshot` (the task status), then `log`, `progress`, `step`, `output`, and `status` last; each event's data is the JSON of its `TaskEvent` variant",
            content_type = "text/event-stream", body = views::TaskEvent),
        (status = 204, description = "the client has every event of this finished task"),
        (status = 404, body = ErrorBody), (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    base: BaseUrl,
    LastEventId(last_seen): LastEventId,
) -> Result<Response, ApiError> {
    // Follow first, then read: nothing falls in between (and what is read is
    // not sent twice: events carry their ids).
    let live = &state.runner.live;
    let receiver = live.subscribe(&task_id);
    let record = match task(&state, &task_id).await {
        Ok(record) => record,
        Err(error) => {
            live.forget(&task_id);
            return Err(error);
        }
    };
    let finished = record.finished_at.is_some();
    if finished {
        live.forget(&task_id);
    }
    let count = u64::try_from(record.event_count).unwrap_or_default();
    let (first, last_id, done) = match last_seen {
        Some(seen) if finished && seen >= count => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(seen) => {
            // An id beyond what is stored (not one of ours) resumes from the end.
            let seen = seen.min(count);
            let Some((lines, ended)) = state.store.events_after(&task_id, seen).await? else {
                return Err(ApiError::NotFound("Task not found.".into()));
            };
            let (events, last_id) = stored_events(&lines, seen);
            (events, last_id, ended)
        }
        None => {
            let snapshot = SseEvent::default()
                .event("snapshot")
                .id(count.to_string())
                .json_data(views::task_status(&record, &base))
                .map_err(|error| ApiError::Internal(Box::new(error)))?;
            let mut first = vec![snapshot];
            if let (true, Some(status)) = (finished, record.status) {
                let end = TaskEvent::status(status.as_str()).encode();
                first.push(sse(count, end.name, &end.data));
            }
            (first, count, finished)
        }
    };
    let follow = Follow {
        receiver,
        _release: Release {
            live: live.clone(),
            task_id: task_id.clone(),
        },
        task_id,
        last_id,
        link: live.link(),
        shared: state.store.is_postgres(),
        store: state.store.clone(),
        shutdown: state.runner.shutdown.clone(),
    };
    let stream = event_stream(first, done, follow);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The `Last-Event-ID` a reconnecting client sends (an id of ours: a number).
pub(crate) struct LastEventId(Option<u64>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok());
        Ok(Self(id))
    }
}

/// An event as the stream sends it.
fn sse(id: u64, name: &str, data: &str) -> SseEvent {
    SseEvent::default()
        .event(name)
        .id(id.to_string())
        .data(data)
}

/// Stored events (JSON lines) as SSE events, the first with id `after + 1`;
/// returns them and the last id.
fn stored_events(lines: &[String], after: u64) -> (Vec<SseEvent>, u64) {
    let mut last_id = after;
    let mut events = Vec::with_capacity(lines.len());
    for line in lines {
        last_id += 1;
        match serde_json::from_str::<TaskEvent>(line) {
            Ok(event) => {
                let event = event.encode();
                events.push(sse(last_id, event.name, &event.data));
            }
            Err(error) => tracing::error!(%error, id = last_id, "an unreadable stored event"),
        }
    }
    (events, last_id)
}

/// A stream's live part: the task's broadcast after `last_id`, repaired from
/// the database when this follower falls behind. With several gateways the
/// task may run on another: its events arrive over the fan-out (`link`), and
/// the database is read on a timer (often while the fan-out is down, seldom
/// as a safety net while it is up) and each time the fan-out reconnects.
struct Follow {
    // Fields drop in this order: the receiver before the release counts them.
    receiver: broadcast::Receiver<LiveEvent>,
    _release: Release,
    task_id: String,
    last_id: u64,
    /// The fan-out's link, when the gateway has one.
    link: Option<tokio::sync::watch::Receiver<crate::fanout::Link>>,
    /// Whether other gateways may share the database (PostgreSQL).
    shared: bool,
    store: Store,
    shutdown: tokio_util::sync::CancellationToken,
}

/// How often a follower reads the database when events may come from other
/// gateways: without a fan-out, while it is down, and while it is up.
const POLL_ALONE: Duration = Duration::from_secs(1);
const POLL_LINK_DOWN: Duration = Duration::from_millis(500);
const POLL_LINK_UP: Duration = Duration::from_secs(5);

/// Releases a task's channel when its last follower goes (a task that waits
/// for a step keeps none for followers that left).
struct Release {
    live: crate::live::LiveEvents,
    task_id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.live.release(&self.task_id);
    }
}

fn event_stream(
    first: Vec<SseEvent>,
    done: bool,
    mut follow: Follow,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |sender| async move {
        for (index, event) in first.into_iter().enumerate() {
            let event = if index == 0 {
                event.retry(RECONNECT_AFTER)
            } else {
                event
            };
            if sender.send(event).await.is_err() {
                return;
            }
        }
        if done {
            return;
        }
        loop {
            let poll = follow.poll_every();
            let received = tokio::select! {
                received = follow.receiver.recv() => received,
                // The client left, or the gateway is stopping: end the stream
                // (the client resumes with its Last-Event-ID).
                () = sender.closed() => return,
                () = follow.shutdown.cancelled() => return,
                // Events may have been missed while the fan-out was away.
                () = link_moved(&mut follow.link) => {
                    match follow.repair(&sender).await {
                        Repaired::Going => continue,
                        Repaired::Done => return,
                    }
                }
                () = sleep_for(poll) => {
                    match follow.catch_up(&sender).await {
                        Repaired::Going => continue,
                        Repaired::Done => return,
                    }
                }
            };
            let live = match received {
                Ok(live) if live.id <= follow.last_id => continue,
                Ok(live) if live.id == follow.last_id + 1 => live,
                // Events it missed (it fell behind, or they were published
                // after the task's end): they are stored, send them from there.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    match follow.repair(&sender).await {
                        Repaired::Going => continue,
                        Repaired::Done => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The task ended: whatever was not received is stored.
                    let _done = follow.repair(&sender).await;
                    return;
                }
            };
            follow.last_id = live.id;
            let last = live.is_final();
            if sender
                .send(sse(live.id, live.name, &live.data))
                .await
                .is_err()
                || last
            {
                return;
            }
        }
    })
}

/// Whether a repaired stream goes on.
enum Repaired {
    Going,
    Done,
}

/// Returns when the fan-out's link changes; never without one.
async fn link_moved(link: &mut Option<tokio::sync::watch::Receiver<crate::fanout::Link>>) {
    let moved = match link {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => false,
    };
    if !moved {
        // No fan-out, or it stopped (shutdown): nothing will move.
        std::future::pending::<()>().await;
    }
}

/// Sleeps for `duration`; forever without one.
async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

impl Follow {
    /// How long until the database is read without a reason: never when this
    /// gateway alone runs the database's tasks (SQLite).
    fn poll_every(&self) -> Option<Duration> {
        if !self.shared {
            return None;
        }
        Some(match &self.link {
            None => POLL_ALONE,
            Some(link) if link.borrow().up => POLL_LINK_UP,
            Some(_) => POLL_LINK_DOWN,
        })
    }

    /// Sends what the database holds beyond the last event sent, if anything
    /// (one short read when nothing is new).
    async fn catch_up(&mut self, sender: &tokio::sync::mpsc::Sender<SseEvent>) -> Repaired {
        match self.store.event_progress(&self.task_id).await {
            Ok(Some((count, ended))) if ended || count > self.last_id => self.repair(sender).await,
            Ok(Some(_)) => Repaired::Going,
            Ok(None) => Repaired::Done,
            // The database is away: try again at the next tick.
            Err(_) => Repaired::Going,
        }
    }

    /// Sends the stored events after the last one sent; done when they end
    /// the task or the client left.
    async fn repair(&mut self, sender: &tokio::sync::mpsc::Sender<SseEvent>) -> Repaired {
        let Ok(Some((lines, ended))) = self.store.events_after(&self.task_id, self.last_id).await
        else {
            return Repaired::Done;
        };
        let (events, last_id) = stored_events(&lines, self.last_id);
        self.last_id = last_id;
        for event in events {
            if sender.send(event).await.is_err() {
                return Repaired::Done;
            }
        }
        if ended {
            Repaired::Done
        } else {
            Repaired::Going
        }
    }
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

/// `GET /plugins/<identifier>/<task>/<step>-ui/`: the step's form (values from
/// the query string). The same handler as [`step`]; described apart so each
/// method has its own operation.
#[utoipa::path(get, path = "/plugins/{plugin}/{task}/{step}/", operation_id = "getStepForm", security((), ("bearer" = [])), tag = "tasks",
    params(("plugin" = String, Path), ("task" = String, Path),
        ("step" = String, Path, description = "`<stepId>-ui`")),
    responses((status = 200, description = "the step's form", content_type = "text/html", body = String),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the database is unavailable; see Retry-After", body = ErrorBody)))]
pub(crate) async fn step_form(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    query: Query<BTreeMap<String, String>>,
    base: BaseUrl,
    request: Request,
) -> Result<Response, ApiError> {
    step(state, path, query, base, request).await
}

/// `GET|POST /plugins/<identifier>/<task>/<step>-ui/` and `POST …/<step>-process/`.
#[utoipa::path(post, path = "/plugins/{plugin}/{task}/{step}/", operation_id = "submitStep", security((), ("bearer" = [])), tag = "tasks",
    params(("plugin" = String, Path), ("task" = String, Path),
        ("step" = String, Path, description = "`<stepId>-ui` (form) or `<stepId>-process` (submission)")),
    request_body(content = FormValues, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "step submitted", headers(("Location" = String, description = "the task's URL"))),
        (status = 400, description = "a malformed body", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 200, description = "the step's form", content_type = "text/html", body = String),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the step was already submitted", body = ErrorBody),
        (status = 422, body = ValidationErrorBody),
        (status = 503, description = "the plugin is not ready; the step still waits (see Retry-After)", body = ErrorBody)))]
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
    let record = task(&state, &task_id).await.map_err(|error| match error {
        ApiError::NotFound(_) => not_found(),
        other => other,
    })?;
    if record.plugin != plugin {
        return Err(not_found());
    }
    // A step asked for again (a loop) is its latest request.
    let Some(step) = record
        .steps
        .iter()
        .rev()
        .find(|step| step.step_id == step_id)
    else {
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
                plugins: &super::plugins::plugin_choices(&state, &fields, &base),
            });
            Ok(Html(page).into_response())
        }
        StepAction::Process if !is_post => Err(ApiError::NotFound("Step not found.".into())),
        StepAction::Process => {
            let submitted_already =
                || ApiError::Conflict("This step was already submitted.".into());
            if step.cleared {
                return Err(submitted_already());
            }
            if record.finished_at.is_some() {
                return Err(ApiError::Conflict("This task has ended.".into()));
            }
            let submitted = body::read(&state, request, body::Uploads::Store).await?;
            let values = match forms::validate(&fields, &submitted.values) {
                Ok(values) => values,
                Err(errors) => {
                    submitted.discard_uploads(&state).await;
                    return Err(ApiError::Invalid(submitted.location(), errors));
                }
            };
            let not_ready = || {
                ApiError::Unavailable(format!(
                    "Plugin {plugin} is not ready; the step was not submitted, try again shortly."
                ))
            };
            // The step is taken only when its continuation can run now: else
            // it stays waiting and the client tries again.
            let ready = state.directory.snapshot().ready(&record.plugin).is_some();
            if !ready || state.runner.shutdown_begun() {
                submitted.discard_uploads(&state).await;
                return Err(not_ready());
            }
            let Some(holder) = state.runner.lease.holder() else {
                submitted.discard_uploads(&state).await;
                return Err(super::plugins::rejoining());
            };
            let inputs = serde_json::to_string(&values)
                .map_err(|error| ApiError::Internal(Box::new(error)))?;
            // Finished even if the client goes away: a cleared step always gets
            // its continuation (or waits again).
            let runner = state.runner.clone();
            let task_url = base.absolute(&format!("/tasks/{task_id}/"));
            let (task, step, step_base) = (task_id.clone(), step_id.clone(), base.clone());
            let taken = tokio::spawn(async move {
                let _taking = runner.taking(&task);
                let notices = Notices {
                    task_url: &task_url,
                    events: &[WebhookEvent::Steps.as_str()],
                };
                let Some(call) = runner
                    .store
                    .clear_step(&task, &step, &inputs, &holder.id, notices)
                    .await?
                else {
                    return Ok(Taken::AlreadySubmitted);
                };
                let job = match Job::stored(call, step_base.clone(), &holder) {
                    Ok(job) => job,
                    Err(reason) => {
                        runner
                            .end_failed(&task, &holder.claim(-1), &reason, &step_base)
                            .await?;
                        return Ok(Taken::Yes);
                    }
                };
                if runner.spawn(job) {
                    return Ok(Taken::Yes);
                }
                // Shutdown began meanwhile: the step waits for the next start.
                runner.store.reopen_step(&task, &step, &holder.id).await?;
                Ok::<_, ApiError>(Taken::NotNow)
            })
            .await
            .map_err(|error| ApiError::Internal(Box::new(error)))?;
            match taken {
                Ok(Taken::Yes) => {
                    Ok(Redirect::to(&base.absolute(&format!("/tasks/{task_id}/"))).into_response())
                }
                Ok(Taken::AlreadySubmitted) => {
                    submitted.discard_uploads(&state).await;
                    Err(submitted_already())
                }
                Ok(Taken::NotNow) => {
                    submitted.discard_uploads(&state).await;
                    Err(not_ready())
                }
                Err(error) => {
                    submitted.discard_uploads(&state).await;
                    Err(error)
                }
            }
        }
    }
}

/// What became of a step's submission.
enum Taken {
    /// Its continuation runs.
    Yes,
    /// Another submission took the step first.
    AlreadySubmitted,
    /// The gateway began shutting down: the step waits again.
    NotNow,
}

enum StepAction {
    Ui,
    Process,
}

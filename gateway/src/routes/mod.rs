//! The router: every route of the REST contract, the 308 for a missing trailing
//! slash, JSON errors, CORS and the body limit.

pub(crate) mod admin;
mod body;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod plugins;
pub(crate) mod tasks;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use tower_http::{
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

use crate::{auth, error::error_response, openapi, state::AppState, urls::BaseUrl};

/// The REST API.
pub(crate) fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::LOCATION, header::CONTENT_DISPOSITION]);
    let max_body = state.config.max_body_bytes;
    // The plugin list is open like the contract's routes (a token with
    // --require-auth); listing everyone's tasks and changing a plugin need the
    // admin role.
    let admin = Router::new()
        .route("/admin/tasks/", get(admin::tasks))
        .route("/admin/tasks/{task}/", get(admin::task))
        .route("/admin/tasks/{task}/cancel/", post(admin::cancel))
        .route("/admin/tasks/{task}/retry/", post(admin::retry))
        .route("/admin/plugins/{plugin}/{action}/", post(admin::act))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/", get(plugins::root))
        .route("/plugins/", get(plugins::list))
        .route("/plugins/{plugin}/", get(plugins::plugin))
        .route(
            "/plugins/{plugin}/ui/",
            get(plugins::ui_get).post(plugins::ui_post),
        )
        .route("/plugins/{plugin}/process/", post(plugins::process))
        .route(
            "/plugins/{plugin}/{task}/{step}/",
            get(tasks::step_form).post(tasks::step),
        )
        .route("/tasks/{task}/", get(tasks::status).post(tasks::subscribe))
        .route("/tasks/{task}/events", get(tasks::events))
        .route("/tasks/{task}/events/", get(tasks::events))
        .route("/files/{file}/", get(files::download))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api-spec.json", get(openapi::spec))
        .route("/api-docs/", get(openapi::viewer))
        .route(
            "/api-docs/swagger-ui-bundle.js",
            get(openapi::viewer_script),
        )
        .route("/api-docs/swagger-ui.css", get(openapi::viewer_style))
        .route("/admin/plugins/", get(admin::list))
        .merge(admin)
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // The page itself is open: its data calls carry the token the page asks for.
        .route("/dashboard/", get(crate::dashboard::page))
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        // Every request, routed or not: its metrics and access log line.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .layer(cors)
        .with_state(state)
}

/// 308 to the slashed path when the slash is missing; else the JSON 404.
async fn fallback(base: BaseUrl, request: Request) -> Response {
    let uri = request.uri();
    let path = uri.path();
    if !path.ends_with('/') {
        // Leading slashes collapse: `//host` must not become a redirect elsewhere.
        let path = base.path(&format!("/{}/", path.trim_start_matches('/')));
        let location = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        return (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    error_response(StatusCode::NOT_FOUND, "Not found.")
}

/// Rejections of axum's extractors (plain text) get the contract's JSON body.
async fn json_errors(response: Response) -> Response {
    let is_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    let failed = response.status().is_client_error() || response.status().is_server_error();
    if !is_text || !failed {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    error_response(status, &text)
}

async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
}

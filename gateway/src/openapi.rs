//! `/api-spec.json`: the OpenAPI 3 document generated from the handlers'
//! annotations and the response types, and a viewer served from local assets.

use std::sync::OnceLock;

use axum::{
    Json,
    http::header,
    response::{Html, IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{error, routes, views};

#[derive(OpenApi)]
#[openapi(
    info(title = "Corral plugin runner", description = "The QHAna plugin REST API, served by Corral."),
    servers((url = "/", description = "this gateway")),
    paths(
        routes::plugins::root,
        routes::plugins::list,
        routes::plugins::plugin,
        routes::plugins::ui_get,
        routes::plugins::ui_post,
        routes::plugins::process,
        routes::tasks::step_form,
        routes::tasks::step,
        routes::tasks::status,
        routes::tasks::subscribe,
        routes::tasks::events,
        routes::files::download,
        routes::admin::list,
        routes::admin::act,
        routes::admin::tasks,
        routes::admin::task,
        routes::admin::cancel,
        routes::admin::retry,
        routes::health::health,
        routes::health::ready,
    ),
    components(schemas(
        views::Root, views::PluginList, views::PluginEntry, views::PluginMetadata,
        views::EntryPoint, views::PluginDependency, views::DataInput, views::DataOutput,
        views::Link, views::TaskStatus, views::Progress, views::Step, views::Output,
        error::ErrorBody, error::ValidationErrorBody, error::SubscribeRequest, error::FormValues,
        error::MultipartFormValues, error::JsonFormValues,
        routes::health::Health, routes::health::Readiness,
    )),
    modifiers(&BearerScheme, &OptionalBodies),
)]
struct ApiDoc;

struct BearerScheme;

/// Form bodies are optional: an absent body is a form with no fields (then
/// the plugin's required fields are reported missing, as a 422).
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let Some(body) = item
                .post
                .as_mut()
                .and_then(|operation| operation.request_body.as_mut())
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document, built once.
fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as JSON (`corral api-spec`, for client generators offline).
pub fn document_json() -> String {
    serde_json::to_string_pretty(document()).unwrap_or_default()
}

/// `GET /api-spec.json`.
pub(crate) async fn spec() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

/// `GET /api-docs/`: Swagger UI, from assets compiled into the binary. On a
/// phone, wide parts (response tables, examples, models) scroll on their own
/// rather than the page, and the always empty "Links" column is left out.
pub(crate) async fn viewer() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Corral API</title>\
         <link rel=\"stylesheet\" href=\"swagger-ui.css\"><style>body{margin:0}\
         .swagger-ui .responses-inner,.swagger-ui .table-container,.swagger-ui .model-box,\
         .swagger-ui .highlight-code{max-width:100%;overflow-x:auto}\
         @media (max-width:640px){.swagger-ui .wrapper{padding:0 .6rem}\
         .swagger-ui .information-container .info{margin:1.5rem 0}\
         .swagger-ui .response-col_links{display:none}\
         .swagger-ui .opblock .opblock-summary-path{word-break:break-all}}</style>\
         </head><body><div id=\"ui\"></div>\
         <script src=\"swagger-ui-bundle.js\"></script>\
         <script>window.ui = SwaggerUIBundle({url: '../api-spec.json', dom_id: '#ui'});</script>\
         </body></html>",
    )
}

/// `GET /api-docs/swagger-ui-bundle.js`.
pub(crate) async fn viewer_script() -> Response {
    asset(
        "text/javascript",
        include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
    )
}

/// `GET /api-docs/swagger-ui.css`.
pub(crate) async fn viewer_style() -> Response {
    asset(
        "text/css",
        include_bytes!("../assets/swagger-ui/swagger-ui.css"),
    )
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        bytes,
    )
        .into_response()
}

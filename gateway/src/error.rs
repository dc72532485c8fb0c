//! `ApiError`: every error the REST API answers, as the contract's JSON body.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::StoreError;

/// Validation errors by field name, each with its messages.
pub(crate) type FieldErrors = BTreeMap<String, Vec<String>>;

/// Where invalid input was found: `form`, `json` or `query`.
#[derive(Debug, Clone, Copy)]
pub enum Location {
    /// A form body (urlencoded or multipart).
    Form,
    /// A JSON body.
    Json,
    /// The query string.
    Query,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Self::Form => "form",
            Self::Json => "json",
            Self::Query => "query",
        }
    }
}

/// The `Retry-After` of a 503: a plugin restarts within about a second.
const RETRY_AFTER_SECONDS: &str = "1";

/// An error answered by the REST API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 with a message such as `Task not found.`
    #[error("{0}")]
    NotFound(String),
    /// 422 with field errors.
    #[error("invalid input")]
    Invalid(Location, FieldErrors),
    /// 400 for a request that cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// 413 when a body or upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// 415 for a body type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 with `Retry-After`: the plugin is not ready (or the supervisor is
    /// unreachable); nothing was changed, the client may try again.
    #[error("{0}")]
    Unavailable(String),
    /// 409: the request conflicts with the resource's state (e.g. a step that
    /// was already submitted).
    #[error("{0}")]
    Conflict(String),
    /// 401: no or a bad token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token without the needed role.
    #[error("{0}")]
    Forbidden(String),
    /// A gRPC call failed; answered by the grpc-gateway table (see the README).
    #[error("{}", .0.message())]
    Grpc(tonic::Status),
    /// 500: logged with its cause, answered generically.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(location: Location, field: &str, message: &str) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), vec![message.to_owned()]);
        Self::Invalid(location, errors)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if matches!(error, StoreError::NoLease) {
            return Self::Unavailable(
                "The gateway is rejoining its cluster; try again shortly.".into(),
            );
        }
        if error.is_unavailable() {
            // Each refused request would be a line: /ready and the runner's
            // retries report the outage.
            tracing::debug!(%error, "database unavailable");
            return Self::Unavailable("The database is unavailable; try again shortly.".into());
        }
        Self::Internal(Box::new(error))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message.clone()),
            Self::Invalid(location, errors) => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                let body = ValidationErrorBody {
                    code: status.as_u16(),
                    status: reason(status),
                    errors: BTreeMap::from([(location.as_str().to_owned(), errors.clone())]),
                };
                return (status, Json(body)).into_response();
            }
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            Self::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message.clone()),
            Self::UnsupportedMediaType(message) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, message.clone())
            }
            Self::Unavailable(message) => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
                return response;
            }
            Self::Conflict(message) => (StatusCode::CONFLICT, message.clone()),
            Self::Unauthorized(message) => {
                let mut response = error_response(StatusCode::UNAUTHORIZED, message);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message.clone()),
            Self::Grpc(status) => {
                let http = http_status(status.code());
                if http.is_server_error()
                    && http != StatusCode::SERVICE_UNAVAILABLE
                    && http != StatusCode::GATEWAY_TIMEOUT
                    && http != StatusCode::NOT_IMPLEMENTED
                {
                    tracing::error!(code = ?status.code(), message = status.message(), "gRPC call failed");
                    (
                        http,
                        "The server could not complete the request.".to_owned(),
                    )
                } else {
                    (http, status.message().to_owned())
                }
            }
            Self::Internal(source) => {
                tracing::error!(error = %source, source = ?source, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server could not complete the request.".to_owned(),
                )
            }
        };
        error_response(status, &message)
    }
}

/// gRPC code → HTTP status, the grpc-gateway table (documented in the README).
pub(crate) fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of every 4xx/5xx but 422.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The HTTP status code.
    code: u16,
    /// Its reason phrase, e.g. `Not Found`.
    status: &'static str,
    /// What went wrong, e.g. `Task not found.`
    message: String,
}

/// The body of a 422.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationErrorBody {
    code: u16,
    status: &'static str,
    /// Messages by location (`form`, `json` or `query`), then by field.
    errors: BTreeMap<String, FieldErrors>,
}

/// A webhook (un)subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    dead_code,
    reason = "documents the body the handler reads field by field"
)]
pub(crate) struct SubscribeRequest {
    /// `subscribe` or `unsubscribe`.
    command: String,
    /// Where to POST `?source=<task URL>&event=<event>`.
    webhook_href: String,
    /// `status`, `steps`, `details`, or null for all.
    event: Option<String>,
}

/// A plugin's form values by field name (camelCase), as its metadata declares them.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body the handler reads field by field"
)]
pub(crate) struct FormValues(BTreeMap<String, String>);

/// The same values as multipart form data (a file field carries the upload).
/// A schema of its own, so client generators tell the body types apart.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body the handler reads field by field"
)]
pub(crate) struct MultipartFormValues(BTreeMap<String, String>);

/// The same values as a JSON object (strings, numbers or booleans).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body the handler reads field by field"
)]
pub(crate) struct JsonFormValues(BTreeMap<String, String>);

/// The contract's error body for any status.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        code: status.as_u16(),
        status: reason(status),
        message: message.to_owned(),
    };
    (status, Json(body)).into_response()
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

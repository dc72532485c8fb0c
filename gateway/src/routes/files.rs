//! `GET /files/<id>/?file-id=<secret>`: a stored file, streamed.

use std::collections::HashMap;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;
use tokio_util::io::ReaderStream;

use crate::{
    error::{ApiError, ErrorBody, Location, ValidationErrorBody},
    ids,
    state::AppState,
};

/// `GET /files/<id>/?file-id=<secret>`.
#[utoipa::path(get, path = "/files/{file}/", operation_id = "downloadFile", security((), ("bearer" = [])), tag = "files",
    params(("file" = String, Path), ("file-id" = String, Query, description = "the file's secret")),
    responses((status = 200, description = "the file, served with its own content type and name", content_type = "*/*", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 422, description = "file-id missing", body = ValidationErrorBody),
        (status = 503, description = "the database or the plugin is unavailable; see Retry-After", headers(("Retry-After" = u32, description = "seconds")), body = ErrorBody)))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(secret) = query.get("file-id") else {
        return Err(ApiError::field(
            Location::Query,
            "file-id",
            "Missing data for required field.",
        ));
    };
    let not_found = || ApiError::NotFound("File not found.".into());
    if !ids::looks_like_id(&file_id) {
        return Err(not_found());
    }
    let file = state.store.file(&file_id).await?.ok_or_else(not_found)?;
    if !bool::from(file.secret.as_bytes().ct_eq(secret.as_bytes())) {
        return Err(not_found());
    }
    let mut response = match file.inline {
        Some(bytes) => Body::from(bytes).into_response(),
        None => {
            let reader = state.runner.files.open(&file.storage_key).await?;
            Body::from_stream(ReaderStream::with_capacity(reader, 256 * 1024)).into_response()
        }
    };
    let headers = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&file.content_type) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    let name = file.name.as_deref().unwrap_or("download");
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(name)) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// `attachment; filename="…"` with an RFC 5987 `filename*` for non-ASCII names.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn disposition_keeps_names_safe() {
        assert_eq!(
            super::content_disposition("out.txt"),
            "attachment; filename=\"out.txt\"; filename*=UTF-8''out.txt"
        );
        assert_eq!(
            super::content_disposition("a\"b ü.csv"),
            "attachment; filename=\"a_b _.csv\"; filename*=UTF-8''a%22b%20%C3%BC.csv"
        );
    }
}

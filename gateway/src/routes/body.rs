//! Reading submitted form values from urlencoded, multipart and JSON bodies.
//! Uploaded files go straight to the file store; the plugin gets a URL.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, Multipart, Request},
    http::header::CONTENT_TYPE,
};
use serde_json::Value;

use crate::{
    error::{ApiError, Location},
    forms::MAX_FIELD_BYTES,
    ids::random_id,
    state::AppState,
    store::{FileKind, FileRecord},
};

/// Most fields one form may submit.
const MAX_FIELDS: usize = 1000;
/// The largest urlencoded or JSON body (uploads go through multipart).
const MAX_SMALL_BODY: usize = 16 * 1024 * 1024;

/// What to do with uploaded files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uploads {
    /// Store them; the form's value is a URL the plugin can read.
    Store,
    /// Read past them (a form page, a subscription): nothing is kept.
    Skip,
}

/// What a form submission carried.
#[derive(Debug, Default)]
pub(crate) struct Submitted {
    pub(crate) values: BTreeMap<String, String>,
    /// Where errors about it are reported (`form` or `json`).
    pub(crate) location: Option<Location>,
    /// Ids of the files uploaded with it.
    pub(crate) uploads: Vec<String>,
}

impl Submitted {
    pub(crate) fn location(&self) -> Location {
        self.location.unwrap_or(Location::Form)
    }

    /// Forgets the files uploaded with a submission that made no task.
    pub(crate) async fn discard_uploads(&self, state: &AppState) {
        for upload in &self.uploads {
            if let Ok(Some(file)) = state.store.file(upload).await {
                let _ = state.runner.files.delete(&file.storage_key).await;
            }
            let _ = state.store.delete_unattached_file(upload).await;
        }
    }
}

/// Reads the body of `request` as the form it carries.
pub(crate) async fn read(
    state: &AppState,
    request: Request,
    uploads: Uploads,
) -> Result<Submitted, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        return read_multipart(state, multipart, uploads).await;
    }
    let limit = state.config.max_body_bytes.min(MAX_SMALL_BODY);
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::TooLarge("The request body is too large.".into()))?;
    if content_type.starts_with("application/json") {
        return read_json(&bytes);
    }
    if content_type.starts_with("application/x-www-form-urlencoded") || content_type.is_empty() {
        return read_urlencoded(&bytes);
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Unsupported content type `{content_type}`: send application/x-www-form-urlencoded, \
         multipart/form-data or application/json."
    )))
}

/// A urlencoded body, strictly: every name and value must decode to UTF-8 (the
/// form parsers' usual lossy decoding would hand the plugin replaced text).
pub(crate) fn read_urlencoded(bytes: &[u8]) -> Result<Submitted, ApiError> {
    let mut submitted = Submitted {
        location: Some(Location::Form),
        ..Submitted::default()
    };
    let pairs = bytes
        .split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty());
    for (count, pair) in pairs.enumerate() {
        if count >= MAX_FIELDS {
            return Err(ApiError::TooLarge(format!(
                "More than {MAX_FIELDS} form fields."
            )));
        }
        let (key, value) = match pair.iter().position(|byte| *byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let key = decode_component(key)
            .ok_or_else(|| ApiError::BadRequest("A form field name is not valid UTF-8.".into()))?;
        let value = decode_component(value)
            .ok_or_else(|| ApiError::field(Location::Form, &key, "Not valid UTF-8 text."))?;
        submitted.values.insert(key, value);
    }
    Ok(submitted)
}

/// One urlencoded name or value: `+` is a space, `%XX` a byte; `None` when the
/// bytes are not UTF-8.
fn decode_component(encoded: &[u8]) -> Option<String> {
    let spaced: std::borrow::Cow<'_, [u8]> = if encoded.contains(&b'+') {
        encoded
            .iter()
            .map(|byte| if *byte == b'+' { b' ' } else { *byte })
            .collect::<Vec<u8>>()
            .into()
    } else {
        encoded.into()
    };
    let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(decoded).ok()
}

fn read_json(bytes: &[u8]) -> Result<Submitted, ApiError> {
    let invalid = |message: &str| ApiError::field(Location::Json, "_schema", message);
    let value: Value = serde_json::from_slice(bytes).map_err(|_| invalid("Invalid JSON body."))?;
    let Value::Object(object) = value else {
        return Err(invalid("Invalid input type."));
    };
    if object.len() > MAX_FIELDS {
        return Err(ApiError::TooLarge(format!(
            "More than {MAX_FIELDS} fields."
        )));
    }
    let mut submitted = Submitted {
        location: Some(Location::Json),
        ..Submitted::default()
    };
    for (key, value) in object {
        let text = match value {
            Value::Null => continue,
            Value::String(text) => text,
            Value::Bool(flag) => flag.to_string(),
            Value::Number(number) => number.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ApiError::field(Location::Json, &key, "Not a valid string."));
            }
        };
        submitted.values.insert(key, text);
    }
    Ok(submitted)
}

/// A multipart body; the files of one that fails part way are forgotten.
async fn read_multipart(
    state: &AppState,
    multipart: Multipart,
    uploads: Uploads,
) -> Result<Submitted, ApiError> {
    let mut submitted = Submitted {
        location: Some(Location::Form),
        ..Submitted::default()
    };
    match read_parts(state, multipart, uploads, &mut submitted).await {
        Ok(()) => Ok(submitted),
        Err(error) => {
            submitted.discard_uploads(state).await;
            Err(error)
        }
    }
}

async fn read_parts(
    state: &AppState,
    mut multipart: Multipart,
    uploads: Uploads,
    submitted: &mut Submitted,
) -> Result<(), ApiError> {
    let mut count = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        count += 1;
        if count > MAX_FIELDS {
            return Err(ApiError::TooLarge(format!(
                "More than {MAX_FIELDS} form fields."
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if uploads == Uploads::Skip && field.file_name().is_some() {
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
            continue;
        }
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                if value.len() + chunk.len() > MAX_FIELD_BYTES {
                    return Err(ApiError::TooLarge(format!(
                        "The field `{name}` is too large."
                    )));
                }
                value.extend_from_slice(&chunk);
            }
            let Ok(value) = String::from_utf8(value) else {
                return Err(ApiError::field(
                    Location::Form,
                    &name,
                    "Not valid UTF-8 text.",
                ));
            };
            submitted.values.insert(name, value);
            continue;
        };
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let record = FileRecord {
            id: random_id(),
            secret: random_id(),
            task_id: None,
            kind: FileKind::Input,
            position: 0,
            name: Some(file_name.clone()),
            data_type: String::new(),
            content_type,
            size: 0,
            storage_key: random_id(),
            inline: None,
        };
        let mut sink = state.runner.files.create(&record.storage_key).await?;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(error) = sink.write(chunk).await {
                        sink.abort().await;
                        return Err(error.into());
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    sink.abort().await;
                    return Err(multipart_error(error));
                }
            }
        }
        let size = sink.finish().await?;
        let record = FileRecord {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..record
        };
        state.store.insert_file(&record).await?;
        let url = format!(
            "{}/files/{}/?file-id={}",
            state.config.internal_url, record.id, record.secret
        );
        submitted.values.insert(format!("{name}.name"), file_name);
        submitted.values.insert(name, url);
        submitted.uploads.push(record.id);
    }
    Ok(())
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status().as_u16() == 413 {
        ApiError::TooLarge("The request body is too large.".into())
    } else {
        ApiError::BadRequest(format!("Invalid multipart body: {}", error.body_text()))
    }
}

/// Property tests: hostile bodies never panic the decoder, and what a browser
/// encodes comes back as it was sent. `PROPTEST_CASES` sets how many cases
/// (`scripts/fuzz` runs many).
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::read_urlencoded;

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _decoded_or_refused = read_urlencoded(&bytes);
        }

        #[test]
        fn what_a_browser_encodes_is_what_the_plugin_gets(
            values in proptest::collection::btree_map("\\PC{0,12}", "\\PC{0,40}", 0..12)
        ) {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(values.iter())
                .finish();
            let decoded = read_urlencoded(encoded.as_bytes()).expect("valid");
            let expected: BTreeMap<String, String> = values;
            prop_assert_eq!(decoded.values, expected);
        }
    }
}

//! Unguessable identifiers for tasks, files and file secrets.

use std::fmt::Write;

/// 128 random bits as 32 lowercase hex characters.
pub(crate) fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes
        .iter()
        .fold(String::with_capacity(32), |mut id, byte| {
            let _ = write!(id, "{byte:02x}");
            id
        })
}

/// Whether `text` could be an id made by [`random_id`] (checked before any query).
pub(crate) fn looks_like_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

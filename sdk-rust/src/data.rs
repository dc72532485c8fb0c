//! Reading data inputs given as URLs.

use crate::Error;

/// The most a data input may hold when read into memory.
const MAX_DATA_BYTES: usize = 256 * 1024 * 1024;

/// Reads a data input: `http(s)://`, `data:`, or `file://localhost/…` where the
/// operator allowed it (`allow_file_urls` in the plugin's manifest, passed as
/// `CORRAL_ALLOW_FILE_URLS=1`). At most 256 MiB are read.
pub async fn read_data(url: &str) -> Result<Vec<u8>, Error> {
    static ALLOW_FILE_URLS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let allow_file_urls = *ALLOW_FILE_URLS
        .get_or_init(|| std::env::var("CORRAL_ALLOW_FILE_URLS").is_ok_and(|value| value == "1"));
    read(url, allow_file_urls).await
}

async fn read(url: &str, allow_file_urls: bool) -> Result<Vec<u8>, Error> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("data") => read_data_url(url),
        Some("http" | "https") => read_http(url).await,
        Some("file") => {
            if !allow_file_urls {
                return Err(Error::task(
                    "file:// data URLs are not allowed for this plugin (allow_file_urls in its manifest)",
                ));
            }
            let path = url
                .strip_prefix("file://localhost/")
                .ok_or_else(|| Error::task("only file://localhost/… URLs can be read"))?;
            tokio::fs::read(format!("/{path}"))
                .await
                .map_err(|error| Error::task(format!("failed to read {url}: {error}")))
        }
        _ => Err(Error::task(format!(
            "unsupported data URL `{}`: expected http(s), data: or file://localhost",
            url.chars().take(64).collect::<String>()
        ))),
    }
}

fn read_data_url(url: &str) -> Result<Vec<u8>, Error> {
    let parsed = data_url::DataUrl::process(url)
        .map_err(|error| Error::task(format!("invalid data: URL: {error:?}")))?;
    let (body, _fragment) = parsed
        .decode_to_vec()
        .map_err(|error| Error::task(format!("invalid data: URL body: {error:?}")))?;
    Ok(body)
}

async fn read_http(url: &str) -> Result<Vec<u8>, Error> {
    let failed = |error: reqwest::Error| Error::task(format!("failed to read {url}: {error}"));
    let mut response = reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_DATA_BYTES {
            return Err(Error::task(format!(
                "data at {url} is larger than {MAX_DATA_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn data_urls_decode_and_file_urls_need_permission() {
        let body = super::read("data:text/plain;base64,aGVsbG8=", false)
            .await
            .expect("data url");
        assert_eq!(body, b"hello");
        let plain = super::read("data:,a%20b", false).await.expect("data url");
        assert_eq!(plain, b"a b");
        assert!(
            super::read("file://localhost/etc/hostname", false)
                .await
                .is_err()
        );
        assert!(super::read("ftp://x/y", false).await.is_err());
    }
}

//! Absolute URLs as the client sees them: the request's Host, or the
//! `X-Forwarded-*` headers of the trusted proxies (`REVERSE_PROXY_COUNT`).

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};

use crate::{error::ApiError, state::AppState};

/// Scheme, host and path prefix under which the client reached the gateway.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    origin: String,
    prefix: String,
}

impl BaseUrl {
    /// A base from its parts (the prefix without a trailing slash).
    pub(crate) fn new(origin: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            prefix: prefix.into(),
        }
    }

    /// `path` (starting with `/`) as an absolute URL.
    pub(crate) fn absolute(&self, path: &str) -> String {
        format!("{}{}{path}", self.origin, self.prefix)
    }

    /// `path` as a root-relative URL, with the proxy's prefix.
    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Reads the base from request headers, trusting `trusted_proxies` hops of
    /// `X-Forwarded-*`.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        trusted_proxies: usize,
        fallback_host: &str,
    ) -> Self {
        let forwarded = |name: &str| -> Option<String> {
            if trusted_proxies == 0 {
                return None;
            }
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .collect();
            // The value the outermost trusted proxy wrote.
            values
                .len()
                .checked_sub(trusted_proxies)
                .and_then(|index| values.get(index))
                .filter(|value| !value.is_empty())
                .map(|value| (*value).to_owned())
        };
        let scheme = forwarded("x-forwarded-proto")
            .filter(|scheme| scheme == "http" || scheme == "https")
            .unwrap_or_else(|| "http".to_owned());
        let host = forwarded("x-forwarded-host")
            .or_else(|| {
                headers
                    .get("host")
                    .and_then(|host| host.to_str().ok())
                    .map(str::to_owned)
            })
            .filter(|host| valid_host(host))
            .unwrap_or_else(|| fallback_host.to_owned());
        let host = match forwarded("x-forwarded-port") {
            Some(port) if port.parse::<u16>().is_ok() && !host.contains(':') => {
                format!("{host}:{port}")
            }
            _ => host,
        };
        let prefix = forwarded("x-forwarded-prefix")
            .map(|prefix| format!("/{}", prefix.trim_matches('/')))
            .filter(|prefix| prefix != "/" && valid_prefix(prefix))
            .unwrap_or_default();
        Self::new(format!("{scheme}://{host}"), prefix)
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

fn valid_prefix(prefix: &str) -> bool {
    prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'))
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self::from_headers(
            &parts.headers,
            state.config.trusted_proxies,
            &state.config.public_host,
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::BaseUrl;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn host_header_without_trusted_proxies() {
        let base = BaseUrl::from_headers(
            &headers(&[("host", "runner:5005"), ("x-forwarded-host", "evil")]),
            0,
            "fallback",
        );
        assert_eq!(base.absolute("/tasks/1/"), "http://runner:5005/tasks/1/");
    }

    #[test]
    fn forwarded_headers_of_trusted_proxies() {
        let base = BaseUrl::from_headers(
            &headers(&[
                ("host", "internal:5005"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "spoofed, qhana.example"),
                ("x-forwarded-prefix", "/runner"),
            ]),
            1,
            "fallback",
        );
        assert_eq!(
            base.absolute("/tasks/1/"),
            "https://qhana.example/runner/tasks/1/"
        );
        assert_eq!(base.path("/plugins/"), "/runner/plugins/");
    }

    #[test]
    fn bad_hosts_fall_back() {
        let base = BaseUrl::from_headers(&headers(&[("host", "a/b")]), 0, "127.0.0.1:5005");
        assert_eq!(base.absolute("/"), "http://127.0.0.1:5005/");
    }
}

//! The admin token of the supervisor's Admin API: callers send it as
//! `authorization: Bearer <token>` ([`AdminToken`], a client interceptor), the
//! supervisor checks it ([`RequireAdminToken`]). Plugins are never given it.

use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::supervisor::v1::admin_client;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// The metadata key that names the plugin (its folder on the host) a call
/// through a supervisor's plugin proxy is for.
pub const PLUGIN_HEADER: &str = "corral-plugin";

/// A token that cannot travel in gRPC metadata (empty, or not visible ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidToken;

impl std::fmt::Display for InvalidToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("the admin token must be non-empty visible ASCII")
    }
}

impl std::error::Error for InvalidToken {}

/// `Bearer <token>`, checked to be a valid metadata value.
fn bearer(token: &str) -> Result<AsciiMetadataValue, InvalidToken> {
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(InvalidToken);
    }
    format!("Bearer {token}").parse().map_err(|_| InvalidToken)
}

/// Adds the admin token to every call of a client.
#[derive(Clone)]
pub struct AdminToken {
    header: AsciiMetadataValue,
}

impl AdminToken {
    /// The interceptor for `token`.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        Ok(Self {
            header: bearer(token)?,
        })
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminToken(…)")
    }
}

impl Interceptor for AdminToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(AUTHORIZATION, self.header.clone());
        Ok(request)
    }
}

/// An Admin API client that sends the admin token with each call.
pub type AdminApi = admin_client::AdminClient<InterceptedService<Channel, AdminToken>>;

/// An Admin API client on `channel` that sends `token`.
pub fn admin_api(channel: Channel, token: AdminToken) -> AdminApi {
    admin_client::AdminClient::with_interceptor(channel, token)
}

/// The supervisor's check: a call without the admin token is refused with
/// `UNAUTHENTICATED`.
#[derive(Clone)]
pub struct RequireAdminToken {
    expected: std::sync::Arc<[u8]>,
}

impl RequireAdminToken {
    /// The check for `token`.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        Ok(Self {
            expected: bearer(token)?.as_bytes().into(),
        })
    }
}

impl std::fmt::Debug for RequireAdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("RequireAdminToken(…)")
    }
}

impl RequireAdminToken {
    /// Whether an `authorization` value carries the token.
    pub fn allows(&self, authorization: &[u8]) -> bool {
        constant_time_eq(authorization, &self.expected)
    }
}

impl Interceptor for RequireAdminToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get(AUTHORIZATION)
            .map(AsciiMetadataValue::as_bytes)
            .unwrap_or_default();
        if self.allows(given) {
            return Ok(request);
        }
        Err(Status::unauthenticated(
            "the Admin API needs the admin token: send `authorization: Bearer <token>` \
             (the token is in the supervisor's --admin-token-file, or CORRAL_ADMIN_TOKEN)",
        ))
    }
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, header.parse().expect("ascii"));
        }
        let mut check = RequireAdminToken::new("s3cret-token").expect("valid");
        check
            .call(request)
            .map(|_| ())
            .map_err(|status| status.code())
    }

    #[test]
    fn only_the_admin_token_passes() {
        assert_eq!(check(Some("Bearer s3cret-token")), Ok(()));
        for wrong in [
            None,
            Some("Bearer s3cret-tokem"),
            Some("Bearer s3cret-token "),
            Some("bearer s3cret-token"),
            Some("s3cret-token"),
            Some("Bearer "),
        ] {
            assert_eq!(check(wrong), Err(tonic::Code::Unauthenticated), "{wrong:?}");
        }
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("two words").is_err());
    }

    #[test]
    fn the_client_sends_what_the_server_checks() {
        let mut client = AdminToken::new("s3cret-token").expect("valid");
        let request = client.call(Request::new(())).expect("added");
        let mut server = RequireAdminToken::new("s3cret-token").expect("valid");
        assert!(server.call(request).is_ok());
    }
}

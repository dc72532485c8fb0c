//! Bearer tokens: JWTs (HS256 with a shared secret, or RS256/ES256 with a
//! public key), and the operator's admin token (the `admin-token` file in the
//! data directory, owner-only; the supervisor's token), which stands for the
//! admin role. The contract's routes are open unless `--require-auth`; the
//! admin routes always need the admin role.

use std::{collections::HashSet, sync::Arc};

use axum::{
    extract::{Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{error::ApiError, state::AppState};

/// How tokens are checked.
#[derive(Clone)]
pub struct AuthConfig {
    key: Option<(DecodingKey, Algorithm)>,
    audience: Option<String>,
    issuer: Option<String>,
    /// Every route needs a valid token.
    pub require_auth: bool,
    /// The role that may change plugins.
    pub admin_role: String,
    /// The operator's admin token: it stands for the admin role.
    operator_token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthConfig")
            .field(
                "algorithm",
                &self.key.as_ref().map(|(_, algorithm)| algorithm),
            )
            .field("audience", &self.audience)
            .field("require_auth", &self.require_auth)
            .finish()
    }
}

/// Why the token settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The public key file is not an RSA or EC public key in PEM.
    #[error("the JWT public key is neither an RSA nor an EC (P-256) public key in PEM form")]
    BadPublicKey,
    /// Both a secret and a public key were given.
    #[error("give either a JWT secret or a JWT public key, not both")]
    BothKeys,
    /// `--require-auth` without any key.
    #[error("--require-auth needs a JWT secret or a JWT public key")]
    NoKey,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            key: None,
            audience: None,
            issuer: None,
            require_auth: false,
            admin_role: "admin".into(),
            operator_token: None,
        }
    }
}

/// Who a request's token says it is: set on the request by the admin layer.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Its roles.
    roles: HashSet<String>,
    /// Who it is, for logs and reasons: the token's `sub`, or the operator.
    pub(crate) name: String,
}

impl AuthConfig {
    /// Builds the settings from a secret (HS256) or a PEM public key (RS256 or ES256).
    pub fn new(
        secret: Option<&str>,
        public_key_pem: Option<&[u8]>,
        audience: Option<String>,
        issuer: Option<String>,
        require_auth: bool,
        admin_role: String,
    ) -> Result<Self, AuthConfigError> {
        let key = match (secret, public_key_pem) {
            (Some(_), Some(_)) => return Err(AuthConfigError::BothKeys),
            (Some(secret), None) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(pem)) => Some(
                DecodingKey::from_rsa_pem(pem)
                    .map(|key| (key, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(pem).map(|key| (key, Algorithm::ES256)))
                    .map_err(|_| AuthConfigError::BadPublicKey)?,
            ),
            (None, None) => None,
        };
        if require_auth && key.is_none() {
            return Err(AuthConfigError::NoKey);
        }
        Ok(Self {
            key,
            audience,
            issuer,
            require_auth,
            admin_role,
            operator_token: None,
        })
    }

    /// These settings, taking `token` (the operator's admin token) for the
    /// admin role as well.
    pub fn with_operator_token(mut self, token: &str) -> Self {
        // An empty token would let an empty bearer in.
        self.operator_token = (!token.is_empty()).then(|| token.as_bytes().into());
        self
    }

    /// Checks the request's bearer token; returns who it is.
    fn verify(&self, request: &Request) -> Result<Caller, ApiError> {
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("A bearer token is required.".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("A bearer token is required.".into()))?;
        if let Some(operator) = &self.operator_token
            && bool::from(operator.as_ref().ct_eq(token.as_bytes()))
        {
            return Ok(Caller {
                roles: HashSet::from([self.admin_role.clone()]),
                name: "the operator (admin token)".into(),
            });
        }
        let Some((key, algorithm)) = &self.key else {
            return Err(ApiError::Unauthorized(
                "The token is not the admin token (the `admin-token` file in the data directory), \
                 and no JWT key is configured (a JWT secret or public key)."
                    .into(),
            ));
        };
        // Only the configured algorithm is accepted: `alg: none` and algorithm
        // confusion are refused by construction.
        let mut validation = Validation::new(*algorithm);
        validation.leeway = 30;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|error| {
                ApiError::Unauthorized(format!("Invalid token: {}.", describe(&error)))
            })?
            .claims;
        // The name goes into task logs: one short line.
        let name = claims.sub.as_deref().map_or_else(
            || "a token without a subject".to_owned(),
            |sub| sub.chars().filter(|c| !c.is_control()).take(64).collect(),
        );
        Ok(Caller {
            name,
            roles: claims.roles(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    sub: Option<String>,
}

impl Claims {
    fn roles(self) -> HashSet<String> {
        self.roles.into_iter().chain(self.role).collect()
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        _ => "it cannot be read",
    }
}

/// Layer for every route: demands a valid token when `--require-auth` is set.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.auth.require_auth
        && let Err(error) = state.auth.verify(&request)
    {
        return error.into_response();
    }
    next.run(request).await
}

/// Layer for the admin routes: the admin token or a valid token with the
/// admin role, always; the handlers find the [`Caller`] on the request.
pub(crate) async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth.verify(&request) {
        Ok(caller) if caller.roles.contains(&state.auth.admin_role) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(_) => ApiError::Forbidden(format!(
            "The token lacks the `{}` role.",
            state.auth.admin_role
        ))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

/// Property tests: no forged `Authorization` header is taken, whatever its bytes.
#[cfg(test)]
mod properties {
    use axum::{body::Body, http::HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::new(
            Some("a-secret-for-property-tests"),
            None,
            None,
            None,
            true,
            "admin".into(),
        )
        .expect("valid")
    }

    fn refused(header: &[u8]) -> Result<(), TestCaseError> {
        let Ok(value) = HeaderValue::from_bytes(header) else {
            return Ok(());
        };
        let request = Request::builder()
            .header(AUTHORIZATION, value)
            .body(Body::empty())
            .expect("request");
        prop_assert!(config().verify(&request).is_err());
        Ok(())
    }

    proptest! {
        #[test]
        fn any_header_bytes_are_refused(
            prefix in prop_oneof![Just("Bearer "), Just("bearer "), Just("")],
            rest in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut header = prefix.as_bytes().to_vec();
            header.extend(rest);
            refused(&header)?;
        }

        #[test]
        fn jwt_shaped_forgeries_are_refused(
            header in "[A-Za-z0-9_-]{0,60}",
            claims in "[A-Za-z0-9_-]{0,120}",
            signature in "[A-Za-z0-9_-]{0,60}",
        ) {
            refused(format!("Bearer {header}.{claims}.{signature}").as_bytes())?;
        }
    }
}

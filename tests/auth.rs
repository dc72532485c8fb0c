//! Bearer tokens on the REST API: open contract routes by default, admin routes
//! that need the admin role, `--require-auth`, and the tokens that are refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::{process::Command, time::SystemTime};

use common::serve::{Corral, Db, TestDatabase, plugins};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-that-is-long-enough";
const HELLO: &str = "hello-world@v0-2-1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value, key: &EncodingKey, algorithm: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).unwrap()
}

fn hs256(claims: Value) -> String {
    token(
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
}

async fn serve(database: &TestDatabase, extra: &[&str]) -> Corral {
    Corral::serve_with(database, &[&plugins()], extra)
}

async fn status_with(
    corral: &Corral,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut request = corral.client.request(method, corral.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_routes_need_the_admin_role_and_refuse_bad_tokens() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = serve(
        &database,
        &[
            "--jwt-secret-file",
            &database.secret_file(SECRET),
            "--jwt-audience",
            "corral",
        ],
    )
    .await;
    corral.wait_for_plugins(&[HELLO]).await;
    let exp = now() + 600;

    // The contract's routes stay open, as in the old runner.
    let (code, _) = status_with(&corral, reqwest::Method::GET, "/plugins/", None).await;
    assert_eq!(code, 200);

    let restart = "/admin/plugins/hello-world/restart/";
    let (code, body) = status_with(&corral, reqwest::Method::POST, restart, None).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"code": 401, "status": "Unauthorized", "message": "A bearer token is required."})
    );
    let refused = [
        (
            hs256(json!({"exp": exp, "aud": "corral", "roles": ["user"]})),
            403,
        ),
        (
            hs256(json!({"exp": now() - 3600, "aud": "corral", "roles": ["admin"]})),
            401,
        ),
        (
            hs256(json!({"exp": exp, "aud": "someone-else", "roles": ["admin"]})),
            401,
        ),
        (hs256(json!({"aud": "corral", "roles": ["admin"]})), 401),
        (hs256(json!({"exp": exp, "roles": ["admin"]})), 401),
        (
            hs256(json!({"exp": exp, "nbf": now() + 3600, "aud": "corral", "roles": ["admin"]})),
            401,
        ),
        (
            token(
                json!({"exp": exp, "aud": "corral", "roles": ["admin"]}),
                &EncodingKey::from_secret(b"another-secret"),
                Algorithm::HS256,
            ),
            401,
        ),
        (
            unsigned(json!({"exp": exp, "aud": "corral", "roles": ["admin"]})),
            401,
        ),
        ("not.a.token".to_string(), 401),
    ];
    for (bearer, expected) in &refused {
        let (code, body) = status_with(&corral, reqwest::Method::POST, restart, Some(bearer)).await;
        assert_eq!(code, *expected, "{bearer}: {body}");
        assert_eq!(body["code"], *expected);
    }

    let admin = hs256(json!({"exp": exp, "aud": "corral", "roles": ["admin"]}));
    let (code, before) = status_with(
        &corral,
        reqwest::Method::GET,
        "/admin/plugins/",
        Some(&admin),
    )
    .await;
    assert_eq!(code, 200);
    let old_pid = before["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["plugin"] == "hello-world")
        .unwrap()["pid"]
        .clone();
    let (code, after) = status_with(&corral, reqwest::Method::POST, restart, Some(&admin)).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["plugin"], "hello-world");
    assert_ne!(after["pid"], old_pid);
    assert_eq!(after["restarts"], 1);
    let (code, body) = status_with(
        &corral,
        reqwest::Method::POST,
        "/admin/plugins/no-such-plugin/stop/",
        Some(&admin),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["message"], "no plugin named `no-such-plugin`");
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: Value) -> String {
    use base64_url::encode;
    format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"}).to_string()),
        encode(&claims.to_string())
    )
}

mod base64_url {
    /// Unpadded base64url, enough to forge a test token.
    pub(crate) fn encode(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn require_auth_demands_a_token_everywhere_and_accepts_es256() {
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("private.pem");
    let public = keys.path().join("public.pem");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .status()
            .expect("openssl is needed to make a test key pair");
        assert!(status.success());
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);

    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = serve(
        &database,
        &[
            "--require-auth",
            "--jwt-public-key",
            public.to_str().unwrap(),
        ],
    )
    .await;
    let key = EncodingKey::from_ec_pem(&std::fs::read(&private).unwrap()).unwrap();
    let user = token(
        json!({"exp": now() + 600, "roles": ["user"]}),
        &key,
        Algorithm::ES256,
    );

    let (code, body) = status_with(&corral, reqwest::Method::GET, "/plugins/", None).await;
    assert_eq!((code, body["code"].clone()), (401, json!(401)));
    let (code, _) = status_with(
        &corral,
        reqwest::Method::GET,
        "/tasks/00000000000000000000000000000000/",
        None,
    )
    .await;
    assert_eq!(code, 401);
    // An HS256 token made with the public key as secret (algorithm confusion) is refused.
    let confused = token(
        json!({"exp": now() + 600}),
        &EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
        Algorithm::HS256,
    );
    let (code, _) = status_with(&corral, reqwest::Method::GET, "/plugins/", Some(&confused)).await;
    assert_eq!(code, 401);

    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let (code, body) =
            status_with(&corral, reqwest::Method::GET, "/plugins/", Some(&user)).await;
        assert_eq!(code, 200);
        if body["plugins"]
            .as_array()
            .is_some_and(|plugins| !plugins.is_empty())
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no plugins listed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A user may run tasks but not restart plugins.
    let (code, _) = status_with(
        &corral,
        reqwest::Method::POST,
        "/admin/plugins/hello-world/restart/",
        Some(&user),
    )
    .await;
    assert_eq!(code, 403);
}

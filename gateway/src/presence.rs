//! Plugin hosts announced in Redis: a supervisor started with a Redis URL
//! keeps the key `<prefix>:hosts:<its URL>` alive (a few seconds' expiry,
//! renewed every second), its value the URL signed with the admin token
//! (HMAC-SHA256); a gateway with `--discover-hosts` on the same Redis and
//! prefix follows every host announced there with a valid signature, besides
//! its `--supervisor` list. Anyone who can write to Redis but does not hold the
//! admin token cannot make a gateway connect (and send the token) elsewhere. A
//! host that stops announcing itself stays followed (shown unreachable while it
//! is down).

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::directory::{Directory, SupervisorLink};

/// How long an announcement lives without being renewed.
pub const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(5);
/// How often a supervisor renews its announcement.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How often a gateway looks for new hosts.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The key a host at `url` is announced under.
pub fn host_key(prefix: &str, url: &str) -> String {
    format!("{prefix}:hosts:{url}")
}

/// The announcement of `url`: the URL and its signature with `token`.
fn signed(url: &str, token: &str) -> String {
    format!("{url}\n{}", signature(url, token))
}

fn signature(url: &str, token: &str) -> String {
    use hmac::Mac;
    // HMAC takes a key of any length.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The URL an announcement names, when its signature is `token`'s.
fn verified(announcement: &str, token: &str) -> Option<String> {
    use subtle::ConstantTimeEq;
    let (url, given) = announcement.split_once('\n')?;
    let expected = signature(url, token);
    let valid: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
    (valid && !expected.is_empty()).then(|| url.to_owned())
}

/// Keeps a host's announcement, signed with the admin `token`, alive until
/// `shutdown`, then removes it.
pub async fn announce(
    redis_url: &str,
    prefix: &str,
    url: &str,
    token: &str,
    shutdown: CancellationToken,
) {
    let client = match redis::Client::open(redis_url) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "invalid Redis URL: this host is not announced");
            return;
        }
    };
    let key = host_key(prefix, url);
    let value = signed(url, token);
    let ttl = u64::try_from(ANNOUNCEMENT_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut connection = None;
    loop {
        if connection.is_none() {
            connection = client.get_connection_manager().await.ok();
        }
        if let Some(manager) = connection.as_mut() {
            let set: redis::RedisResult<()> = manager
                .set_options(
                    &key,
                    &value,
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl)),
                )
                .await;
            if let Err(error) = set {
                tracing::debug!(%error, "failed to announce this host in Redis");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Some(manager) = connection.as_mut() {
        let removed: redis::RedisResult<()> = manager.del(&key).await;
        if let Err(error) = removed {
            tracing::debug!(%error, "failed to remove this host's announcement");
        }
    }
}

/// Follows every host announced on `redis_url` under `prefix` with a valid
/// signature (`secret` is the admin token; `token` carries it), until
/// `shutdown`.
pub(crate) async fn discover(
    client: redis::Client,
    prefix: String,
    directory: Directory,
    secret: String,
    token: corral_proto::admin::AdminToken,
    shutdown: CancellationToken,
) {
    let pattern = host_key(&prefix, "*");
    let mut connection = None;
    loop {
        if connection.is_none() {
            connection = client.get_connection_manager().await.ok();
        }
        if let Some(manager) = connection.as_mut() {
            match announced(manager, &pattern, &secret).await {
                Ok(urls) => {
                    for url in urls {
                        directory.add_host(SupervisorLink {
                            url,
                            token: token.clone(),
                        });
                    }
                }
                Err(error) => tracing::debug!(%error, "failed to read the announced hosts"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn announced(
    manager: &mut redis::aio::ConnectionManager,
    pattern: &str,
    secret: &str,
) -> redis::RedisResult<Vec<String>> {
    let keys: Vec<String> = {
        let mut scan = manager.scan_match::<_, String>(pattern).await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        keys
    };
    let mut urls = Vec::new();
    for key in keys {
        // Gone meanwhile (expired): nothing to follow.
        let Some(announcement) = manager.get::<_, Option<String>>(&key).await? else {
            continue;
        };
        match verified(&announcement, secret) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                urls.push(url);
            }
            _ => tracing::warn!(%key, "an announced host without a valid signature is ignored"),
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_announcement_signed_with_the_token_names_a_host() {
        let announcement = signed("http://10.0.0.5:5006", "the-token");
        assert_eq!(
            verified(&announcement, "the-token").as_deref(),
            Some("http://10.0.0.5:5006")
        );
        assert_eq!(verified(&announcement, "another-token"), None);
        let forged = announcement.replace("10.0.0.5", "10.0.0.6");
        assert_eq!(verified(&forged, "the-token"), None);
        assert_eq!(verified("http://10.0.0.6:5006", "the-token"), None);
    }
}

//! Plugin hosts announced in Redis: a supervisor started with a Redis URL
//! keeps the key `<prefix>:hosts:<its URL>` alive (a few seconds' expiry,
//! renewed every second), and a gateway on the same Redis and prefix follows
//! every host announced there, besides its `--supervisor` list. A host that
//! stops announcing itself stays followed (shown unreachable while it is down).

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

/// Keeps a host's announcement alive until `shutdown`, then removes it.
pub async fn announce(redis_url: &str, prefix: &str, url: &str, shutdown: CancellationToken) {
    let client = match redis::Client::open(redis_url) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "invalid Redis URL: this host is not announced");
            return;
        }
    };
    let key = host_key(prefix, url);
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
                    url,
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

/// Follows every host announced on `redis_url` under `prefix`, until `shutdown`.
pub(crate) async fn discover(
    client: redis::Client,
    prefix: String,
    directory: Directory,
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
            match announced(manager, &pattern).await {
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
) -> redis::RedisResult<Vec<String>> {
    let keys: Vec<String> = {
        let mut scan = manager.scan_match::<_, String>(pattern).await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        keys
    };
    let prefix = pattern.trim_end_matches('*');
    Ok(keys
        .into_iter()
        .filter_map(|key| key.strip_prefix(prefix).map(str::to_owned))
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
        .collect())
}

//! The live plugin list: follows the supervisor's `WatchPlugins` stream and keeps
//! one gRPC channel per plugin endpoint. Readers get an immutable snapshot.

use std::{collections::HashMap, sync::Arc, time::Duration};

use corral_proto::{
    admin::{AdminApi, AdminToken, admin_api},
    plugin::v1::{PluginMetadata, plugin_client::PluginClient},
    supervisor::v1::{ListPluginsRequest, PluginState, PluginStatus, WatchPluginsRequest},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// A ready plugin the gateway can invoke.
#[derive(Debug)]
pub struct LivePlugin {
    /// `hello-world@v0-2-1`.
    pub identifier: String,
    /// Its registered metadata.
    pub metadata: PluginMetadata,
    /// The supervisor's name for it (its folder).
    pub folder: String,
    /// Where it serves gRPC.
    pub endpoint: String,
    /// The process that serves it now.
    pub pid: u32,
    /// Whether its tasks may run again after a crash.
    pub retry_safe: bool,
    channel: Channel,
}

impl LivePlugin {
    /// A client on the plugin's shared channel.
    pub fn client(&self) -> PluginClient<Channel> {
        PluginClient::new(self.channel.clone())
    }
}

/// Every plugin the supervisor announced, by folder; ready ones by identifier.
#[derive(Debug, Default)]
pub struct PluginTable {
    ready: HashMap<String, Arc<LivePlugin>>,
    /// Identifiers of plugins the supervisor knows but that are not ready.
    not_ready: HashMap<String, String>,
    /// Why each plugin folder's last process ended.
    exit_reasons: HashMap<String, String>,
    /// Every plugin the supervisor knows, ready or not.
    all: Vec<PluginSummary>,
    /// Whether the supervisor's plugin list is being followed.
    connected: bool,
    /// Plugins starting that never said who they are (a supervisor's first
    /// start): until they register, an identifier not known may yet appear.
    unidentified: usize,
}

/// A plugin as the supervisor last reported it.
#[derive(Debug, Clone)]
pub struct PluginSummary {
    /// The plugin folder.
    pub folder: String,
    /// `ready`, `backoff`, … (see [`state_name`]).
    pub state: String,
    /// Starts after the first one.
    pub restarts: u32,
}

impl PluginTable {
    /// The table while the supervisor cannot be reached: every identifier seen
    /// is known but not ready.
    fn unreachable(known: &HashMap<String, String>) -> Self {
        let not_ready = known
            .values()
            .map(|identifier| (identifier.clone(), "supervisor unreachable".to_owned()))
            .collect();
        Self {
            not_ready,
            ..Self::default()
        }
    }

    /// The ready plugin with this identifier.
    pub fn ready(&self, identifier: &str) -> Option<&Arc<LivePlugin>> {
        self.ready.get(identifier)
    }

    /// Ready plugins, sorted by name, then by version.
    pub fn sorted(&self) -> Vec<&Arc<LivePlugin>> {
        let mut plugins: Vec<_> = self.ready.values().collect();
        plugins.sort_by(|a, b| {
            a.metadata
                .name
                .cmp(&b.metadata.name)
                .then_with(|| compare_versions(&a.metadata.version, &b.metadata.version))
        });
        plugins
    }

    /// Whether the supervisor is reachable (its plugin list is followed).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether `identifier` is served, or was and is coming back.
    pub fn knows(&self, identifier: &str) -> bool {
        self.ready.contains_key(identifier) || self.not_ready.contains_key(identifier)
    }

    /// Whether an identifier not known now may still appear: the list is not
    /// followed yet, or a plugin is starting for the first time.
    pub fn may_learn_more(&self) -> bool {
        !self.connected || self.unidentified > 0
    }

    /// Every plugin the supervisor knows, sorted by folder.
    pub fn all(&self) -> &[PluginSummary] {
        &self.all
    }

    /// Why the last process of a plugin folder ended, as the supervisor said.
    pub fn last_exit_reason(&self, folder: &str) -> Option<&str> {
        self.exit_reasons.get(folder).map(String::as_str)
    }

    /// Why a known plugin cannot be invoked now, e.g. `starting`.
    pub fn unavailable_reason(&self, identifier: &str) -> Option<&str> {
        self.not_ready.get(identifier).map(String::as_str)
    }
}

/// Semver order with an optional leading `v`; unparsable versions sort first,
/// among themselves by text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |text: &str| semver::Version::parse(text.strip_prefix('v').unwrap_or(text)).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// A supervisor plugin state in lower case, e.g. `ready`, `backoff`.
pub fn state_name(state: i32) -> String {
    PluginState::try_from(state)
        .map(|state| {
            state
                .as_str_name()
                .trim_start_matches("PLUGIN_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// How the gateway reaches its supervisor's Admin API: the URL and the token.
#[derive(Debug, Clone)]
pub struct SupervisorLink {
    /// The supervisor's gRPC URL, e.g. `http://127.0.0.1:5006`.
    pub url: String,
    /// The Admin API's token.
    pub token: AdminToken,
}

impl SupervisorLink {
    /// A client of the Admin API, connected.
    pub async fn admin(&self) -> Result<AdminApi, tonic::transport::Error> {
        let channel = Endpoint::from_shared(self.url.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(admin_api(channel, self.token.clone()))
    }
}

/// A handle on the live plugin table.
#[derive(Debug, Clone)]
pub struct Directory {
    table: watch::Receiver<Arc<PluginTable>>,
}

impl Directory {
    /// Follows the supervisor at `supervisor_url` until `stop`, reconnecting
    /// when the stream breaks. Plugins are absent until the first list arrives.
    pub fn follow(supervisor: SupervisorLink, stop: CancellationToken) -> Self {
        let (sender, table) = watch::channel(Arc::new(PluginTable::default()));
        tokio::spawn(async move {
            let mut statuses: HashMap<String, PluginStatus> = HashMap::new();
            let mut channels: HashMap<String, Channel> = HashMap::new();
            // Identifiers seen, by plugin folder: while one restarts (or the
            // supervisor is away) it stays known, answered 503, never 404.
            let mut known: HashMap<String, String> = HashMap::new();
            let mut retry_delay = Duration::from_millis(50);
            loop {
                let followed = tokio::select! {
                    () = stop.cancelled() => return,
                    result = watch_once(&supervisor, &mut statuses, &mut channels, &mut known, &sender) => result,
                };
                match followed {
                    Ok(()) => retry_delay = Duration::from_millis(50),
                    Err(error) => tracing::warn!(
                        supervisor = %supervisor.url,
                        %error,
                        "plugin list unavailable; retrying"
                    ),
                }
                // The supervisor is gone: no plugin can be invoked until it is back.
                statuses.clear();
                sender.send_replace(Arc::new(PluginTable::unreachable(&known)));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry_delay) => {}
                }
                retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
            }
        });
        Self { table }
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<PluginTable> {
        self.table.borrow().clone()
    }

    /// Waits until `condition` holds for the table (e.g. a plugin is ready again).
    pub async fn wait_for(&self, condition: impl Fn(&PluginTable) -> bool) {
        let mut table = self.table.clone();
        let _ = table.wait_for(|table| condition(table)).await;
    }
}

async fn watch_once(
    supervisor: &SupervisorLink,
    statuses: &mut HashMap<String, PluginStatus>,
    channels: &mut HashMap<String, Channel>,
    known: &mut HashMap<String, String>,
    sender: &watch::Sender<Arc<PluginTable>>,
) -> Result<(), tonic::Status> {
    let mut admin = supervisor
        .admin()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    // The supervisor's plugins are a fixed set, and the stream begins with the
    // state of each: the table is published once it holds all of them, so no
    // identifier is taken for absent while the list is still arriving.
    let expected = admin
        .list_plugins(ListPluginsRequest {})
        .await?
        .into_inner()
        .plugins
        .into_iter()
        .map(|plugin| plugin.plugin)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut stream = admin
        .watch_plugins(WatchPluginsRequest {})
        .await?
        .into_inner();
    tracing::info!(supervisor = %supervisor.url, "following the plugin list");
    if expected == 0 {
        sender.send_replace(Arc::new(build_table(statuses, channels, known)));
    }
    while let Some(status) = stream.message().await? {
        if !status.identifier.is_empty() {
            known.insert(status.plugin.clone(), status.identifier.clone());
        }
        statuses.insert(status.plugin.clone(), status);
        if statuses.len() >= expected {
            sender.send_replace(Arc::new(build_table(statuses, channels, known)));
        }
    }
    Ok(())
}

fn build_table(
    statuses: &HashMap<String, PluginStatus>,
    channels: &mut HashMap<String, Channel>,
    known: &HashMap<String, String>,
) -> PluginTable {
    let mut all: Vec<PluginSummary> = statuses
        .values()
        .map(|status| PluginSummary {
            folder: status.plugin.clone(),
            state: state_name(status.state),
            restarts: status.restarts,
        })
        .collect();
    all.sort_by(|a, b| a.folder.cmp(&b.folder));
    let mut table = PluginTable {
        all,
        connected: true,
        ..PluginTable::default()
    };
    for status in statuses.values() {
        if !status.last_exit_reason.is_empty() {
            table
                .exit_reasons
                .insert(status.plugin.clone(), status.last_exit_reason.clone());
        }
        // Between two processes a plugin has no identifier: its last one stays.
        let identifier = match (status.identifier.as_str(), known.get(&status.plugin)) {
            ("", Some(last)) => last,
            ("", None) => {
                if status.state == PluginState::Starting as i32 {
                    table.unidentified += 1;
                }
                continue;
            }
            (identifier, _) => identifier,
        };
        let ready = status.state == PluginState::Ready as i32;
        let Some(metadata) = status.metadata.clone().filter(|_| ready) else {
            let state = state_name(status.state);
            table.not_ready.insert(identifier.to_owned(), state);
            continue;
        };
        let channel = match channels.get(&status.endpoint) {
            Some(channel) => channel.clone(),
            None => match Endpoint::from_shared(status.endpoint.clone()) {
                Ok(endpoint) => {
                    let channel = endpoint.tcp_nodelay(true).connect_lazy();
                    channels.insert(status.endpoint.clone(), channel.clone());
                    channel
                }
                Err(error) => {
                    tracing::warn!(endpoint = %status.endpoint, %error, "unusable plugin endpoint");
                    continue;
                }
            },
        };
        table.ready.insert(
            status.identifier.clone(),
            Arc::new(LivePlugin {
                identifier: status.identifier.clone(),
                metadata,
                folder: status.plugin.clone(),
                endpoint: status.endpoint.clone(),
                pid: status.pid,
                retry_safe: status.retry_safe,
                channel,
            }),
        );
    }
    // Channels of endpoints no plugin serves any more are dropped.
    channels.retain(|endpoint, _| {
        table
            .ready
            .values()
            .any(|plugin| &plugin.endpoint == endpoint)
    });
    table
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::compare_versions;

    #[test]
    fn versions_order_by_semver_with_optional_v() {
        assert_eq!(compare_versions("v0.10.0", "v0.9.1"), Ordering::Greater);
        assert_eq!(compare_versions("0.2.1", "v0.2.1"), Ordering::Equal);
        assert_eq!(compare_versions("v1.0.0-rc.1", "v1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("latest", "v0.0.1"), Ordering::Less);
    }
}

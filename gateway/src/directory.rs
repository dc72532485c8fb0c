//! The live plugin list: follows each plugin host's supervisor
//! (`WatchPlugins`, reconnecting) and merges what they say into one table of
//! the plugins ready on some host. A plugin is reached directly on its
//! endpoint when the gateway has one supervisor on its own machine, else
//! through its host's supervisor (the plugin proxy, with the admin token and
//! the plugin's folder in the headers). Each call picks, among the hosts
//! where its plugin is ready and that are not drained, the one with the
//! fewest calls in flight from this gateway. Readers get an immutable
//! snapshot.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use corral_proto::{
    admin::{AdminApi, AdminToken, PLUGIN_HEADER, admin_api},
    plugin::v1::{PluginMetadata, plugin_client::PluginClient},
    supervisor::v1::{ListPluginsRequest, PluginState, PluginStatus, WatchPluginsRequest},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// How often an idle link to a supervisor or plugin is pinged, and how long
/// a ping may go unanswered: a dead or cut-off host is noticed within seconds.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection to a supervisor or plugin may take to open (a host
/// that drops packets fails within this, not after TCP's own retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of a plugin, through its host's proxy or directly.
pub type PluginApi = PluginClient<InterceptedService<Channel, Route>>;

/// The headers a call to a plugin carries: none when it goes to the plugin
/// directly; the admin token and the plugin's folder through the proxy.
#[derive(Debug, Clone)]
pub struct Route {
    proxied: Option<(AdminToken, AsciiMetadataValue)>,
}

impl Interceptor for Route {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some((token, folder)) = &mut self.proxied else {
            return Ok(request);
        };
        let mut request = token.call(request)?;
        request.metadata_mut().insert(PLUGIN_HEADER, folder.clone());
        Ok(request)
    }
}

/// A ready plugin the gateway can invoke.
#[derive(Debug)]
pub struct LivePlugin {
    /// `hello-world@v0-2-1`.
    pub identifier: String,
    /// Its registered metadata.
    pub metadata: PluginMetadata,
    /// The supervisor's name for it (its folder).
    pub folder: String,
    /// Where it serves gRPC (on its host).
    pub endpoint: String,
    /// The process that serves it now.
    pub pid: u32,
    /// Whether its tasks may run again after a crash.
    pub retry_safe: bool,
    /// Its host: the index of its supervisor in the gateway's list.
    pub host: usize,
    /// Its host's supervisor URL.
    pub host_url: Arc<str>,
    channel: Channel,
    route: Route,
    /// This gateway's calls running on it.
    in_flight: Arc<AtomicUsize>,
}

impl LivePlugin {
    /// A client on the plugin's shared channel.
    pub fn client(&self) -> PluginApi {
        PluginClient::with_interceptor(self.channel.clone(), self.route.clone())
    }

    /// Counts a call as running on this plugin until the guard is dropped.
    pub fn begin_call(&self) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard(self.in_flight.clone())
    }

    /// This gateway's calls running on it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A call counted as running on its plugin (see [`LivePlugin::begin_call`]).
#[derive(Debug)]
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every plugin of every host; ready ones by identifier.
#[derive(Debug, Default)]
pub struct PluginTable {
    /// Ready plugins by identifier, on the hosts that take tasks.
    ready: HashMap<String, Vec<Arc<LivePlugin>>>,
    /// Ready processes, drained hosts included: (host, folder, pid).
    serving: HashSet<(usize, String, u32)>,
    /// Identifiers of plugins a host knows but that are not ready anywhere.
    not_ready: HashMap<String, String>,
    /// Why each plugin folder's last process ended, by host.
    exit_reasons: HashMap<(usize, String), String>,
    /// Every plugin of every host, ready or not.
    all: Vec<PluginSummary>,
    /// Every host, in the order of the gateway's list.
    hosts: Vec<HostSummary>,
    /// Whether some host's plugin list is being followed.
    connected: bool,
    /// Whether an identifier not known now may still appear: a host's list
    /// is not followed (yet), or a plugin is starting for the first time.
    may_learn_more: bool,
}

/// A plugin as its host last reported it.
#[derive(Debug, Clone)]
pub struct PluginSummary {
    /// The plugin folder.
    pub folder: String,
    /// `ready`, `backoff`, … (see [`state_name`]).
    pub state: String,
    /// Starts after the first one.
    pub restarts: u32,
    /// Its host's supervisor URL.
    pub host: Arc<str>,
    /// Its identifier once known.
    pub identifier: String,
    /// This gateway's calls running on it.
    pub in_flight: usize,
}

/// A plugin host as the gateway sees it.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSummary {
    /// Its supervisor's URL.
    #[schema(value_type = String)]
    pub url: Arc<str>,
    /// Whether its plugin list is followed.
    pub connected: bool,
    /// Whether it is drained (it gets no new task).
    pub draining: bool,
    /// Its plugins that are ready.
    pub ready: usize,
    /// This gateway's calls running on it.
    pub in_flight: usize,
}

impl PluginTable {
    /// The ready plugin with this identifier on the host with the fewest of
    /// this gateway's calls in flight (drained hosts are not considered).
    pub fn ready(&self, identifier: &str) -> Option<&Arc<LivePlugin>> {
        self.ready
            .get(identifier)?
            .iter()
            .min_by_key(|plugin| plugin.in_flight())
    }

    /// Whether `plugin`'s process is still ready on its host.
    pub fn is_serving(&self, plugin: &LivePlugin) -> bool {
        self.serving
            .contains(&(plugin.host, plugin.folder.clone(), plugin.pid))
    }

    /// Ready plugins (one per identifier), sorted by name, then by version.
    pub fn sorted(&self) -> Vec<&Arc<LivePlugin>> {
        let mut plugins: Vec<_> = self.ready.values().filter_map(|on| on.first()).collect();
        plugins.sort_by(|a, b| {
            a.metadata
                .name
                .cmp(&b.metadata.name)
                .then_with(|| compare_versions(&a.metadata.version, &b.metadata.version))
        });
        plugins
    }

    /// Whether some host is reachable (its plugin list is followed).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether `identifier` is served, or was and is coming back.
    pub fn knows(&self, identifier: &str) -> bool {
        self.ready.contains_key(identifier) || self.not_ready.contains_key(identifier)
    }

    /// Whether an identifier not known now may still appear: a host's list is
    /// not followed, or a plugin is starting for the first time.
    pub fn may_learn_more(&self) -> bool {
        self.may_learn_more
    }

    /// Every plugin of every host, sorted by folder, then host.
    pub fn all(&self) -> &[PluginSummary] {
        &self.all
    }

    /// Every host, in the order of the gateway's list.
    pub fn hosts(&self) -> &[HostSummary] {
        &self.hosts
    }

    /// Why the last process of `plugin`'s folder on its host ended.
    pub fn last_exit_reason(&self, plugin: &LivePlugin) -> Option<&str> {
        self.exit_reasons
            .get(&(plugin.host, plugin.folder.clone()))
            .map(String::as_str)
    }

    /// Why a known plugin cannot be invoked now, e.g. `starting`.
    pub fn unavailable_reason(&self, identifier: &str) -> Option<&str> {
        self.not_ready.get(identifier).map(String::as_str)
    }

    /// The table of every host's view.
    fn merge(views: &[Arc<HostView>]) -> Self {
        let mut table = Self::default();
        for view in views {
            table.connected |= view.summary.connected;
            table.may_learn_more |= view.may_learn_more;
            table.hosts.push(view.summary.clone());
            table.all.extend(view.all.iter().cloned());
            for plugin in &view.ready {
                table
                    .serving
                    .insert((plugin.host, plugin.folder.clone(), plugin.pid));
                if !view.summary.draining {
                    table
                        .ready
                        .entry(plugin.identifier.clone())
                        .or_default()
                        .push(plugin.clone());
                }
            }
            for (folder, reason) in &view.exit_reasons {
                table
                    .exit_reasons
                    .insert((view.index, folder.clone()), reason.clone());
            }
        }
        for view in views {
            let draining = view
                .ready
                .iter()
                .filter(|_| view.summary.draining)
                .map(|plugin| (plugin.identifier.clone(), "host draining".to_owned()));
            for (identifier, reason) in view.not_ready.iter().cloned().chain(draining) {
                if !table.ready.contains_key(&identifier) {
                    table.not_ready.entry(identifier).or_insert(reason);
                }
            }
        }
        table
            .all
            .sort_by(|a, b| a.folder.cmp(&b.folder).then_with(|| a.host.cmp(&b.host)));
        table
    }
}

/// What one host says, as its follower last built it.
#[derive(Debug, Default)]
struct HostView {
    /// The host's place in the gateway's list.
    index: usize,
    summary: HostSummary,
    ready: Vec<Arc<LivePlugin>>,
    not_ready: Vec<(String, String)>,
    exit_reasons: Vec<(String, String)>,
    all: Vec<PluginSummary>,
    may_learn_more: bool,
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

/// How the gateway reaches a supervisor's Admin API: the URL and the token.
#[derive(Debug, Clone)]
pub struct SupervisorLink {
    /// The supervisor's gRPC URL, e.g. `http://127.0.0.1:5006`.
    pub url: String,
    /// The Admin API's token.
    pub token: AdminToken,
}

impl SupervisorLink {
    /// The supervisor's endpoint, with keepalives that notice a dead link.
    fn endpoint(&self) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(self.url.clone())?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_EVERY)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }

    /// A client of the Admin API, connected.
    pub async fn admin(&self) -> Result<AdminApi, tonic::transport::Error> {
        let channel = self.endpoint()?.connect().await?;
        Ok(admin_api(channel, self.token.clone()))
    }
}

/// A handle on the live plugin table.
#[derive(Debug, Clone)]
pub struct Directory {
    table: watch::Receiver<Arc<PluginTable>>,
    /// Hosts found later (announced in Redis), to follow too.
    more_hosts: mpsc::UnboundedSender<SupervisorLink>,
}

impl Directory {
    /// Follows every host's supervisor until `stop`, reconnecting when a
    /// stream breaks; plugins are reached through their host's proxy when
    /// `proxied`. A host's plugins are absent until its first list arrives.
    pub fn follow(hosts: Vec<SupervisorLink>, proxied: bool, stop: CancellationToken) -> Self {
        let (sender, table) = watch::channel(Arc::new(PluginTable {
            may_learn_more: true,
            ..PluginTable::default()
        }));
        let (views, mut updates) = mpsc::channel::<Arc<HostView>>(64);
        let (more_hosts, mut found) = mpsc::unbounded_channel::<SupervisorLink>();
        let mut current: Vec<Arc<HostView>> = Vec::new();
        let follow = move |current: &mut Vec<Arc<HostView>>, link: SupervisorLink, proxied| {
            if current.iter().any(|view| *view.summary.url == *link.url) {
                return;
            }
            let index = current.len();
            current.push(Arc::new(HostView {
                index,
                summary: HostSummary {
                    url: link.url.as_str().into(),
                    ..HostSummary::default()
                },
                may_learn_more: true,
                ..HostView::default()
            }));
            let follower = HostFollower::new(index, link, proxied);
            tokio::spawn(follower.run(views.clone(), stop.clone()));
        };
        for link in hosts {
            follow(&mut current, link, proxied);
        }
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    view = updates.recv() => {
                        let Some(view) = view else { return };
                        let index = view.index;
                        current[index] = view;
                        // Several updates at once make one table.
                        while let Ok(view) = updates.try_recv() {
                            let index = view.index;
                            current[index] = view;
                        }
                    }
                    // A host found later is always reached through its proxy.
                    Some(link) = found.recv() => follow(&mut current, link, true),
                }
                sender.send_replace(Arc::new(PluginTable::merge(&current)));
            }
        });
        Self { table, more_hosts }
    }

    /// Follows one more host (announced in Redis); one already followed is
    /// left as it is.
    pub fn add_host(&self, link: SupervisorLink) {
        let _stopped_is_fine = self.more_hosts.send(link);
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

/// Follows one host's supervisor and builds its view.
struct HostFollower {
    index: usize,
    link: SupervisorLink,
    url: Arc<str>,
    /// Through the host's proxy (else directly to each plugin's endpoint).
    proxied: bool,
    statuses: HashMap<String, PluginStatus>,
    /// Channels (and in-flight counters) by plugin endpoint; through the
    /// proxy, every plugin shares the supervisor's channel.
    channels: HashMap<String, (Channel, Arc<AtomicUsize>)>,
    /// Identifiers seen, by plugin folder: while one restarts (or the
    /// supervisor is away) it stays known, answered 503, never 404.
    known: HashMap<String, String>,
    draining: bool,
}

impl HostFollower {
    fn new(index: usize, link: SupervisorLink, proxied: bool) -> Self {
        Self {
            index,
            url: link.url.as_str().into(),
            link,
            proxied,
            statuses: HashMap::new(),
            channels: HashMap::new(),
            known: HashMap::new(),
            draining: false,
        }
    }

    async fn run(mut self, views: mpsc::Sender<Arc<HostView>>, stop: CancellationToken) {
        let mut retry_delay = Duration::from_millis(50);
        loop {
            let followed = tokio::select! {
                () = stop.cancelled() => return,
                result = self.watch_once(&views) => result,
            };
            match followed {
                Ok(()) => retry_delay = Duration::from_millis(50),
                Err(error) => tracing::warn!(
                    supervisor = %self.link.url,
                    %error,
                    "plugin list unavailable; retrying"
                ),
            }
            // The host is gone: none of its plugins can be invoked until it is back.
            self.statuses.clear();
            if views.send(Arc::new(self.unreachable())).await.is_err() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry_delay) => {}
            }
            retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn watch_once(
        &mut self,
        views: &mpsc::Sender<Arc<HostView>>,
    ) -> Result<(), tonic::Status> {
        let mut admin = self
            .link
            .admin()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        // A host's plugins are a fixed set, and the stream begins with the
        // state of each: its view is published once it holds all of them, so
        // no identifier is taken for absent while the list is still arriving.
        let expected = admin
            .list_plugins(ListPluginsRequest {})
            .await?
            .into_inner()
            .plugins
            .into_iter()
            .map(|plugin| plugin.plugin)
            .collect::<HashSet<_>>()
            .len();
        let mut stream = admin
            .watch_plugins(WatchPluginsRequest {})
            .await?
            .into_inner();
        tracing::info!(supervisor = %self.link.url, "following the plugin list");
        if expected == 0 {
            let view = self.view();
            let _gone = views.send(Arc::new(view)).await;
        }
        while let Some(status) = stream.message().await? {
            if !status.identifier.is_empty() {
                self.known
                    .insert(status.plugin.clone(), status.identifier.clone());
            }
            self.draining = status.draining;
            self.statuses.insert(status.plugin.clone(), status);
            if self.statuses.len() >= expected {
                let view = self.view();
                if views.send(Arc::new(view)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The view while the host cannot be reached: every identifier seen on
    /// it is known but not ready.
    fn unreachable(&self) -> HostView {
        HostView {
            index: self.index,
            summary: HostSummary {
                url: self.url.clone(),
                ..HostSummary::default()
            },
            not_ready: self
                .known
                .values()
                .map(|identifier| (identifier.clone(), "supervisor unreachable".to_owned()))
                .collect(),
            may_learn_more: true,
            ..HostView::default()
        }
    }

    /// A channel to a plugin: its host's supervisor through the proxy, else
    /// its own endpoint.
    fn channel(&mut self, endpoint: &str) -> Option<(Channel, Arc<AtomicUsize>)> {
        if let Some(channel) = self.channels.get(endpoint) {
            return Some(channel.clone());
        }
        let target = if self.proxied {
            self.link.endpoint()
        } else {
            Endpoint::from_shared(endpoint.to_owned())
                .map(|endpoint| endpoint.tcp_nodelay(true).connect_timeout(CONNECT_TIMEOUT))
        };
        match target {
            Ok(target) => {
                let channel = (target.connect_lazy(), Arc::new(AtomicUsize::new(0)));
                self.channels.insert(endpoint.to_owned(), channel.clone());
                Some(channel)
            }
            Err(error) => {
                tracing::warn!(%endpoint, %error, "unusable plugin endpoint");
                None
            }
        }
    }

    fn view(&mut self) -> HostView {
        let mut view = HostView {
            index: self.index,
            summary: HostSummary {
                url: self.url.clone(),
                connected: true,
                draining: self.draining,
                ..HostSummary::default()
            },
            ..HostView::default()
        };
        let statuses: Vec<PluginStatus> = self.statuses.values().cloned().collect();
        for status in &statuses {
            if !status.last_exit_reason.is_empty() {
                view.exit_reasons
                    .push((status.plugin.clone(), status.last_exit_reason.clone()));
            }
            // Between two processes a plugin has no identifier: its last one stays.
            let identifier = match (status.identifier.as_str(), self.known.get(&status.plugin)) {
                ("", Some(last)) => last.clone(),
                ("", None) => {
                    if status.state == PluginState::Starting as i32 {
                        view.may_learn_more = true;
                    }
                    String::new()
                }
                (identifier, _) => identifier.to_owned(),
            };
            let ready = status.state == PluginState::Ready as i32;
            let channel = match status.metadata.clone().filter(|_| ready) {
                Some(metadata) => self
                    .channel(&status.endpoint)
                    .map(|channel| (metadata, channel)),
                None => None,
            };
            let in_flight = channel
                .as_ref()
                .map_or(0, |(_, (_, counter))| counter.load(Ordering::Relaxed));
            view.all.push(PluginSummary {
                folder: status.plugin.clone(),
                state: state_name(status.state),
                restarts: status.restarts,
                host: self.url.clone(),
                identifier: identifier.clone(),
                in_flight,
            });
            if identifier.is_empty() {
                continue;
            }
            let Some((metadata, (channel, in_flight))) = channel else {
                view.not_ready.push((identifier, state_name(status.state)));
                continue;
            };
            let route = Route {
                proxied: self.proxied.then(|| {
                    let folder = status
                        .plugin
                        .parse()
                        .unwrap_or_else(|_| AsciiMetadataValue::from_static(""));
                    (self.link.token.clone(), folder)
                }),
            };
            view.summary.ready += 1;
            view.summary.in_flight += in_flight.load(Ordering::Relaxed);
            view.ready.push(Arc::new(LivePlugin {
                identifier,
                metadata,
                folder: status.plugin.clone(),
                endpoint: status.endpoint.clone(),
                pid: status.pid,
                retry_safe: status.retry_safe,
                host: self.index,
                host_url: self.url.clone(),
                channel,
                route,
                in_flight,
            }));
        }
        // Channels of endpoints no plugin serves any more are dropped.
        self.channels
            .retain(|endpoint, _| view.ready.iter().any(|plugin| &plugin.endpoint == endpoint));
        view
    }
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

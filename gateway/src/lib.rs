//! The REST gateway: the QHAna plugin API of `docs/rest-api.md`, turned into
//! gRPC calls to the plugins the supervisor announces; tasks durable in
//! PostgreSQL or SQLite; results streamed back.
//!
//! - [`directory`]: the live plugin list (the supervisor's watch stream).
//! - [`store`]: tasks, steps, files and subscriptions in the database.
//! - `runner`: one task's invocation, event by event.
//! - `routes`: the axum handlers; `views`: the contract's JSON bodies.

mod auth;
mod dashboard;
pub mod directory;
mod error;
mod fanout;
pub mod files;
mod forms;
mod ids;
mod lease;
mod live;
mod metrics;
pub mod openapi;
pub mod presence;
mod routes;
mod runner;
mod server;
pub mod shared_files;
mod state;
pub mod store;
mod ui;
mod urls;
mod views;
mod webhooks;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use auth::{AuthConfig, AuthConfigError};
pub use error::ApiError;
pub use lease::LeaseSettings;
pub use server::ConnectionLimits;
pub use state::{FileStoreKind, GatewayConfig};

use crate::{
    directory::{Directory, SupervisorLink},
    files::LocalFileStore,
    lease::Lease,
    live::LiveEvents,
    runner::Runner,
    state::{AppState, Settings},
    store::Store,
};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The Redis URL cannot be used.
    #[error("invalid Redis URL")]
    Redis(#[source] redis::RedisError),
    /// The supervisor's admin token cannot be used.
    #[error("invalid supervisor admin token")]
    AdminToken(#[source] corral_proto::admin::InvalidToken),
    /// The database could not be opened or migrated.
    #[error("failed to open the database")]
    Store(#[from] store::StoreError),
    /// The data directory or the HTTP port could not be used.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A gateway whose port is bound and whose database is ready.
pub struct RunningGateway {
    listener: tokio::net::TcpListener,
    limits: ConnectionLimits,
    state: AppState,
    shutdown: CancellationToken,
}

impl RunningGateway {
    /// Opens the database (applying migrations), the file store, binds the
    /// port, takes a lease, follows the supervisor, and adopts the running
    /// calls of gateways that went away (this one's previous start among them).
    pub async fn start(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let store = Store::connect(&config.database_url).await?;
        let shared = match config.file_store {
            FileStoreKind::Auto => store.is_postgres(),
            FileStoreKind::Local => false,
            FileStoreKind::Database => true,
        };
        let files: Arc<dyn files::FileStore> = if shared {
            Arc::new(shared_files::DatabaseFileStore::new(store.clone()))
        } else {
            let files_root = files::local_root(&config.data_dir);
            let local =
                LocalFileStore::new(&files_root)
                    .await
                    .map_err(|source| GatewayError::Io {
                        what: format!(
                            "failed to create the file store in {}",
                            files_root.display()
                        ),
                        source,
                    })?;
            Arc::new(local)
        };
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| GatewayError::Io {
                what: format!("failed to listen on {}", config.http),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Io {
            what: "failed to read the bound address".into(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let place = lease::place(&config.data_dir)
            .await
            .map_err(|source| GatewayError::Io {
                what: format!(
                    "failed to read or write the gateway's id in {}",
                    config.data_dir.display()
                ),
                source,
            })?;
        let lease = Lease::acquire(
            store.clone(),
            place,
            format!("http://{local_addr}"),
            config.lease,
            shutdown.clone(),
        )
        .await?;
        webhooks::deliver_notices(
            store.clone(),
            lease.clone(),
            config.webhook_retry_for,
            shutdown.clone(),
        )
        .map_err(|error| GatewayError::Io {
            what: "failed to set up the webhook client".into(),
            source: std::io::Error::other(error),
        })?;
        let token = corral_proto::admin::AdminToken::new(&config.supervisor_token)
            .map_err(GatewayError::AdminToken)?;
        let supervisors: Vec<SupervisorLink> = config
            .supervisor_urls
            .iter()
            .map(|url| SupervisorLink {
                url: url.clone(),
                token: token.clone(),
            })
            .collect();
        // One supervisor on this machine: its plugins are called directly on
        // their loopback endpoints; else through each host's supervisor.
        let proxied =
            supervisors.len() > 1 || !supervisors.iter().all(|link| is_loopback_url(&link.url));
        let directory = Directory::follow(supervisors, proxied, shutdown.clone());
        if let (Some(url), true) = (&config.redis_url, config.discover_hosts) {
            let client = redis::Client::open(url.as_str()).map_err(GatewayError::Redis)?;
            tokio::spawn(presence::discover(
                client,
                config.redis_prefix.clone(),
                directory.clone(),
                config.supervisor_token.clone(),
                token.clone(),
                shutdown.clone(),
            ));
        }
        let live = LiveEvents::default();
        if let Some(url) = &config.redis_url {
            let fanout =
                fanout::FanOut::start(url, &config.redis_prefix, live.clone(), shutdown.clone())
                    .map_err(GatewayError::Redis)?;
            live.fan_out(fanout);
        }
        let runner = Runner {
            store: store.clone(),
            files: files.clone(),
            directory: directory.clone(),
            live,
            lease,
            running: Default::default(),
            taking: Default::default(),
            ended: Default::default(),
            closing: Default::default(),
            metrics: Default::default(),
            max_output_bytes: config.max_output_bytes,
            shutdown: shutdown.clone(),
        };
        let settings = Settings {
            trusted_proxies: config.trusted_proxies,
            public_host: local_addr.to_string(),
            title: config.title.clone(),
            max_body_bytes: config.max_body_bytes,
            internal_url: config.internal_url.clone().map_or_else(
                || format!("http://{}", loopback(local_addr)),
                |url| url.trim_end_matches('/').to_owned(),
            ),
            admin_token: token,
        };
        let state = AppState {
            config: Arc::new(settings),
            store,
            directory,
            runner,
            // The operator's admin token (the supervisors') stands for the admin role.
            auth: Arc::new(
                config
                    .auth
                    .clone()
                    .with_operator_token(&config.supervisor_token),
            ),
        };
        tokio::spawn(state.runner.clone().adopt_orphans(config.lease.renew_every));
        let (ended, ended_elsewhere) = tokio::sync::mpsc::channel(1024);
        let running = state.runner.running.clone();
        let runs_here = move |task_id: &str| {
            running
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .contains_key(task_id)
        };
        state.runner.live.on_ended_elsewhere(runs_here, ended);
        tokio::spawn(
            state
                .runner
                .clone()
                .stop_calls_ended_elsewhere(ended_elsewhere),
        );
        tokio::spawn(shared_files::sweep(
            state.store.clone(),
            files,
            shared,
            config.sweep_every,
            shutdown.clone(),
        ));
        Ok(Self {
            listener,
            limits: config.limits.clone(),
            state,
            shutdown,
        })
    }

    /// The bound HTTP address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled; then takes no new connection, lets
    /// running tasks finish within `grace` (less if `immediate` is cancelled),
    /// ends the rest `FAILURE` with the reason, ends the event streams, and gives
    /// open connections a few seconds to finish.
    pub async fn serve(
        self,
        stop: CancellationToken,
        immediate: CancellationToken,
        grace: std::time::Duration,
    ) -> Result<(), GatewayError> {
        let runner = self.state.runner.clone();
        let (store, lease) = (self.state.store.clone(), runner.lease.clone());
        let router = routes::router(self.state);
        // Stop taking connections at once; meanwhile running tasks get their grace,
        // then event streams end (which lets their connections close).
        let shutdown = self.shutdown.clone();
        let stopping = stop.clone();
        let immediate_drain = immediate.clone();
        let wind_down = tokio::spawn(async move {
            stopping.cancelled().await;
            runner.wind_down(grace, &immediate).await;
            shutdown.cancel();
        });
        let served = server::serve(self.listener, router, &self.limits, stop.clone());
        tokio::pin!(served);
        tokio::select! {
            () = &mut served => {}
            () = async { stop.cancelled().await; tokio::time::sleep(grace + DRAIN).await } => {}
            () = async { immediate_drain.cancelled().await; tokio::time::sleep(DRAIN).await } => {}
        }
        // The plugins (stopped after this returns) are needed until every task ended.
        // (A server that failed on its own winds down the same way.)
        stop.cancel();
        if let Err(error) = wind_down.await {
            tracing::error!(%error, "shutdown of running tasks failed");
        }
        // What this gateway still owns (calls refused as shutdown began) is
        // adopted at once by another, or by its next start.
        if let Some(holder) = lease.holder() {
            let ended = tokio::time::timeout(DRAIN, store.end_lease(&holder.id));
            if !matches!(ended.await, Ok(Ok(()))) {
                tracing::warn!("failed to end the gateway's lease; it expires by itself");
            }
        }
        self.shutdown.cancel();
        Ok(())
    }
}

/// How long open connections may take to finish after a shutdown request.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a URL names this machine by a loopback address (or `localhost`).
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|url| url.host().map(|host| host.to_owned()))
    {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

fn loopback(mut address: std::net::SocketAddr) -> std::net::SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

//! The gateway's configuration and the state its handlers share.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use crate::{auth::AuthConfig, directory::Directory, runner::Runner, store::Store};

/// What `corral gateway` (and `corral serve`) is configured with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the REST API listens.
    pub http: SocketAddr,
    /// The gRPC URL of each plugin host's supervisor, e.g.
    /// `http://127.0.0.1:5006`.
    pub supervisor_urls: Vec<String>,
    /// The token of the supervisors' Admin API (and of their plugin proxy).
    pub supervisor_token: String,
    /// `postgres://…` or `sqlite:…`.
    pub database_url: String,
    /// Holds output files and uploads (`<data_dir>/files`).
    pub data_dir: PathBuf,
    /// How many reverse proxies' `X-Forwarded-*` headers to trust.
    pub trusted_proxies: usize,
    /// The title answered by `GET /`.
    pub title: String,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The largest output file a plugin may write.
    pub max_output_bytes: u64,
    /// Bearer token checks.
    pub auth: AuthConfig,
    /// How long a webhook notice is retried before it is given up.
    pub webhook_retry_for: std::time::Duration,
    /// Connection cap and timeouts of the HTTP server.
    pub limits: crate::ConnectionLimits,
    /// The gateway's lease (several gateways on one database).
    pub lease: crate::LeaseSettings,
    /// Where output files and uploads are kept.
    pub file_store: FileStoreKind,
    /// How often stale uploads and unreferenced files are swept away.
    pub sweep_every: std::time::Duration,
    /// Redis, to fan task events out to the other gateways (`redis://…`).
    pub redis_url: Option<String>,
    /// The prefix of this deployment's Redis keys and channels.
    pub redis_prefix: String,
    /// Whether to follow the plugin hosts announced in Redis (signed with the
    /// admin token), besides `supervisor_urls`.
    pub discover_hosts: bool,
    /// The base URL plugins read uploaded input files from; `None`: the
    /// gateway's own bound address (on loopback when bound to every interface).
    pub internal_url: Option<String>,
}

/// Where output files and uploads are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStoreKind {
    /// In the database on PostgreSQL (shared by every gateway), else local.
    Auto,
    /// A folder in the data directory: one gateway only.
    Local,
    /// In the database, as chunks: every gateway on it serves every file.
    Database,
}

impl GatewayConfig {
    /// The defaults for a gateway on `http` talking to the supervisor at `supervisor_url`.
    pub fn new(
        http: SocketAddr,
        supervisor_url: String,
        database_url: String,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            http,
            supervisor_urls: vec![supervisor_url],
            supervisor_token: String::new(),
            database_url,
            data_dir,
            trusted_proxies: 0,
            title: "Corral plugin runner".into(),
            max_body_bytes: 256 * 1024 * 1024,
            max_output_bytes: 8 * 1024 * 1024 * 1024,
            auth: AuthConfig::default(),
            webhook_retry_for: std::time::Duration::from_secs(60 * 60),
            limits: crate::ConnectionLimits::default(),
            lease: crate::LeaseSettings::default(),
            file_store: FileStoreKind::Auto,
            sweep_every: std::time::Duration::from_secs(10 * 60),
            redis_url: None,
            redis_prefix: "corral".into(),
            internal_url: None,
            discover_hosts: false,
        }
    }
}

/// Runtime settings derived from the config.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) trusted_proxies: usize,
    /// The host used when a request has no usable Host header.
    pub(crate) public_host: String,
    pub(crate) title: String,
    pub(crate) max_body_bytes: usize,
    /// Base URL plugins use to read uploaded input files.
    pub(crate) internal_url: String,
    /// The supervisors' admin token, for the admin routes (on every host the
    /// directory follows).
    pub(crate) admin_token: corral_proto::admin::AdminToken,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) directory: Directory,
    pub(crate) runner: Runner,
    pub(crate) auth: Arc<AuthConfig>,
}

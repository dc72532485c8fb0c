//! Binds the supervisor's gRPC port, starts the plugins, serves until shutdown.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use corral_proto::{
    admin::RequireAdminToken,
    supervisor::v1::{admin_server::AdminServer, registry_server::RegistryServer},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{service::SupervisorService, supervisor::Supervisor};

/// What `corral supervisor` is configured with.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Where the registry, admin, health and reflection services listen.
    pub grpc: SocketAddr,
    /// Folders whose direct subfolders with a `plugin.toml` are plugins.
    pub plugin_folders: Vec<PathBuf>,
    /// The host name a gateway on another machine reaches plugins by; plugins
    /// then listen on every interface. `None`: loopback only.
    pub plugin_host: Option<String>,
    /// The token every Admin API call must carry (`authorization: Bearer …`).
    pub admin_token: String,
    /// Whether plugins run confined (Landlock); see [`crate::confine`].
    pub confine_plugins: bool,
    /// The user plugins run as; `None`: the supervisor's own.
    pub plugin_user: Option<crate::confine::PluginUser>,
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC address could not be bound.
    #[error("failed to listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A plugin folder could not be read.
    #[error("failed to read the plugin folders")]
    PluginFolders(#[source] std::io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("failed to build the reflection service")]
    Reflection(#[source] corral_proto::ReflectionError),
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
    /// The gRPC server task panicked.
    #[error("the gRPC server panicked: {0}")]
    Panicked(String),
    /// Plugins should be confined, but the kernel cannot.
    #[error(transparent)]
    Confinement(#[from] crate::confine::ConfineError),
    /// The admin token cannot be used.
    #[error("invalid admin token")]
    AdminToken(#[source] corral_proto::admin::InvalidToken),
}

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go
/// unanswered before the connection is taken for dead.
const KEEPALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// See [`KEEPALIVE_EVERY`].
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long open connections may take to close after a shutdown request.
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Two-stage shutdown: `graceful` stops the plugins with their grace period;
/// `immediate` (a second Ctrl-C) kills what is left.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop taking work, stop plugins gracefully.
    pub graceful: CancellationToken,
    /// Skip the grace periods.
    pub immediate: CancellationToken,
}

/// A supervisor whose port is bound and whose plugins are starting.
pub struct RunningSupervisor {
    local_addr: SocketAddr,
    incoming: TcpIncoming,
    supervisor: Arc<Supervisor>,
    admin_check: RequireAdminToken,
    /// The plugins' private temporary folders, removed at the end.
    scratch: Option<PathBuf>,
}

impl RunningSupervisor {
    /// Binds `config.grpc` and starts every plugin found in the plugin folders.
    pub async fn start(config: &SupervisorConfig) -> Result<Self, ServeError> {
        let admin_check =
            RequireAdminToken::new(&config.admin_token).map_err(ServeError::AdminToken)?;
        let listener = tokio::net::TcpListener::bind(config.grpc)
            .await
            .map_err(|source| ServeError::Bind {
                address: config.grpc,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            address: config.grpc,
            source,
        })?;
        let registry = registry_url(local_addr);
        let confined_in = if config.confine_plugins {
            if !crate::confine::available() {
                return Err(crate::confine::ConfineError::Unavailable.into());
            }
            // Each plugin's private temporary folder is made beneath this one.
            Some(crate::confine::scratch_folder().map_err(ServeError::PluginFolders)?)
        } else {
            tracing::warn!(
                "plugins run unconfined (--unconfined-plugins): each can read and write \
                 whatever this user can"
            );
            None
        };
        if config.plugin_user.is_none() && nix::unistd::geteuid().is_root() {
            tracing::warn!(
                "plugins run as root: give --plugin-user to run them as a user of their own"
            );
        }
        let supervisor = Arc::new(
            Supervisor::start(
                &config.plugin_folders,
                registry,
                config.plugin_host.clone(),
                confined_in.clone(),
                config.plugin_user,
            )
            .map_err(ServeError::PluginFolders)?,
        );
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        Ok(Self {
            local_addr,
            incoming,
            supervisor,
            admin_check,
            scratch: confined_in,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plugins, for an in-process gateway.
    pub fn supervisor(&self) -> Arc<Supervisor> {
        self.supervisor.clone()
    }

    /// Serves until `shutdown.graceful`, then stops every plugin.
    pub async fn serve(self, shutdown: Shutdown) -> Result<(), ServeError> {
        let (reflection_v1, reflection_v1alpha) = corral_proto::reflection_services(&[
            "corral.supervisor.v1.Registry",
            "corral.supervisor.v1.Admin",
        ])
        .map_err(ServeError::Reflection)?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<RegistryServer<SupervisorService>>()
            .await;
        health_reporter
            .set_serving::<AdminServer<SupervisorService>>()
            .await;
        let service = SupervisorService::new(self.supervisor.clone(), shutdown.graceful.clone());
        let supervisor = self.supervisor.clone();
        let immediate = shutdown.immediate.clone();
        let force_on_second_signal = tokio::spawn(async move {
            immediate.cancelled().await;
            supervisor.force_shutdown();
        });
        let graceful = shutdown.graceful.clone();
        let proxy =
            crate::proxy::PluginProxy::new(self.supervisor.clone(), self.admin_check.clone());
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                // A gateway whose link died is noticed within seconds: its
                // proxied calls are cancelled, and the plugins see it.
                .http2_keepalive_interval(Some(KEEPALIVE_EVERY))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(RegistryServer::new(service.clone()))
                .add_service(AdminServer::with_interceptor(service, self.admin_check))
                .add_service(proxy)
                .serve_with_incoming_shutdown(self.incoming, graceful.clone().cancelled_owned()),
        );
        let served = tokio::select! {
            served = &mut server => served,
            () = graceful.cancelled() => {
                // A client that never acknowledges the end of its connection must not
                // hold the shutdown up.
                match tokio::time::timeout(SERVER_DRAIN, &mut server).await {
                    Ok(served) => served,
                    Err(_) => {
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        tracing::info!("stopping plugins");
        self.supervisor.shutdown().await;
        if let Some(scratch) = &self.scratch
            && let Err(error) = tokio::fs::remove_dir_all(scratch).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(folder = %scratch.display(), %error, "failed to remove the plugins' temporary folders");
        }
        force_on_second_signal.abort();
        match served {
            Ok(result) => result.map_err(ServeError::Transport),
            Err(join_error) => Err(ServeError::Panicked(join_error.to_string())),
        }
    }
}

/// The URL plugins dial: an unspecified bind address is reached on loopback.
fn registry_url(local_addr: SocketAddr) -> String {
    let mut address = local_addr;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{address}")
}

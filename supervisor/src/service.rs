//! The gRPC services: `corral.supervisor.v1.Registry` and `corral.supervisor.v1.Admin`.

use std::{pin::Pin, sync::Arc};

use corral_proto::supervisor::v1::{self as pb, admin_server::Admin, registry_server::Registry};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    convert,
    error::SupervisorError,
    lifecycle::RegisterRequest,
    logs::{LogLine, LogStream},
    supervisor::Supervisor,
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves both services over one [`Supervisor`].
#[derive(Clone)]
pub struct SupervisorService {
    supervisor: Arc<Supervisor>,
    closing: CancellationToken,
}

impl SupervisorService {
    fn status(&self, snapshot: &crate::state::PluginSnapshot) -> pb::PluginStatus {
        convert::status(snapshot, self.supervisor.is_draining())
    }

    /// Wraps a supervisor. The open streams (logs, watch) end when `closing` is
    /// cancelled, so they do not hold up a graceful shutdown.
    pub fn new(supervisor: Arc<Supervisor>, closing: CancellationToken) -> Self {
        Self {
            supervisor,
            closing,
        }
    }
}

/// Streams `produce`'s items until it ends, the client goes away, or the server closes.
fn stream_until_closed<T, F, Fut>(closing: CancellationToken, produce: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let client_gone = sender.clone();
    let produced = produce(sender);
    tokio::spawn(async move {
        tokio::select! {
            () = produced => {}
            () = closing.cancelled() => {}
            () = client_gone.closed() => {}
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

#[tonic::async_trait]
impl Registry for SupervisorService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.protocol_version != corral_proto::PROTOCOL_VERSION {
            return Err(SupervisorError::ProtocolVersion {
                requested: request.protocol_version,
                supported: corral_proto::PROTOCOL_VERSION,
            }
            .into());
        }
        let metadata = request
            .metadata
            .ok_or_else(|| SupervisorError::InvalidMetadata("metadata is missing".into()))?;
        let endpoint = endpoint(&request.address)
            .ok_or_else(|| SupervisorError::InvalidAddress(request.address.clone()))?;
        let (plugin, identifier) = self
            .supervisor
            .register(RegisterRequest {
                token: request.token,
                endpoint,
                metadata,
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse { plugin, identifier }))
    }
}

/// `host:port` or `http://host:port` → `http://host:port`.
fn endpoint(address: &str) -> Option<String> {
    let host_port = address.strip_prefix("http://").unwrap_or(address);
    let (host, port) = host_port.rsplit_once(':')?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().ok()? == 0 {
        return None;
    }
    Some(format!("http://{host_port}"))
}

#[tonic::async_trait]
impl Admin for SupervisorService {
    async fn list_plugins(
        &self,
        _request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let plugins = self
            .supervisor
            .list()
            .iter()
            .map(|snapshot| self.status(snapshot))
            .collect();
        Ok(Response::new(pb::ListPluginsResponse { plugins }))
    }

    async fn get_plugin(
        &self,
        request: Request<pb::PluginRef>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        let snapshot = self.supervisor.get(&request.into_inner().plugin)?;
        Ok(Response::new(self.status(&snapshot)))
    }

    async fn start_plugin(
        &self,
        request: Request<pb::PluginRef>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        let snapshot = self
            .supervisor
            .start_plugin(&request.into_inner().plugin)
            .await?;
        Ok(Response::new(self.status(&snapshot)))
    }

    async fn stop_plugin(
        &self,
        request: Request<pb::PluginRef>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        let snapshot = self
            .supervisor
            .stop_plugin(&request.into_inner().plugin)
            .await?;
        Ok(Response::new(self.status(&snapshot)))
    }

    async fn restart_plugin(
        &self,
        request: Request<pb::PluginRef>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        let snapshot = self
            .supervisor
            .restart_plugin(&request.into_inner().plugin)
            .await?;
        Ok(Response::new(self.status(&snapshot)))
    }

    type FollowLogsStream = BoxStream<pb::PluginLogLine>;

    async fn follow_logs(
        &self,
        request: Request<pb::FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let request = request.into_inner();
        let plugin = self.supervisor.get(&request.plugin)?.name;
        let (past, mut live) = self
            .supervisor
            .logs(&plugin, usize::try_from(request.tail).unwrap_or(usize::MAX))?;
        let stream = stream_until_closed(self.closing.clone(), move |sender| async move {
            for line in &past {
                if sender
                    .send(Ok(convert::log_line(&plugin, line)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !request.follow {
                return;
            }
            loop {
                let line = match live.recv().await {
                    Ok(line) => line,
                    Err(broadcast::error::RecvError::Lagged(missed)) => LogLine {
                        stream: LogStream::Supervisor,
                        text: format!("[{missed} lines not sent: the reader fell behind]").into(),
                        at: std::time::SystemTime::now(),
                        pid: 0,
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if sender
                    .send(Ok(convert::log_line(&plugin, &line)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    type WatchPluginsStream = BoxStream<pb::PluginStatus>;

    async fn watch_plugins(
        &self,
        _request: Request<pb::WatchPluginsRequest>,
    ) -> Result<Response<Self::WatchPluginsStream>, Status> {
        // Subscribe before reading the list, so no change falls in between.
        let mut changes = self.supervisor.subscribe();
        let supervisor = self.supervisor.clone();
        let service = self.clone();
        let stream = stream_until_closed(self.closing.clone(), move |sender| async move {
            let mut pending = supervisor.list();
            loop {
                for snapshot in pending.drain(..) {
                    if sender.send(Ok(service.status(&snapshot))).await.is_err() {
                        return;
                    }
                }
                match changes.recv().await {
                    Ok(snapshot) => pending.push(snapshot),
                    // Fell behind: the whole list again is the truth.
                    Err(broadcast::error::RecvError::Lagged(_)) => pending = supervisor.list(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.supervisor.set_draining(request.into_inner().draining);
        let in_flight = self
            .supervisor
            .in_flight()
            .load(std::sync::atomic::Ordering::SeqCst);
        Ok(Response::new(pb::DrainResponse {
            draining: self.supervisor.is_draining(),
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_become_endpoints() {
        assert_eq!(
            super::endpoint("127.0.0.1:4000").as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert_eq!(
            super::endpoint("http://[::1]:4000").as_deref(),
            Some("http://[::1]:4000")
        );
        assert_eq!(super::endpoint("nonsense"), None);
        assert_eq!(super::endpoint("127.0.0.1:0"), None);
        assert_eq!(super::endpoint(":80"), None);
    }
}

//! A misbehaving plugin, for tests: it registers like any plugin but, depending on
//! its `mode` input, breaks the event protocol. Written on the raw gRPC contract
//! (not the SDK's `Plugin` trait), as a plugin in another language would be.
//!
//! Modes: `chunk-first` (output bytes outside an output), `empty` (an event with
//! nothing in it), `huge` (one 3 MiB message), `no-result` (the stream ends
//! without a result), `big-output` (`size` bytes in 1 MiB chunks), `admin`
//! (calls the supervisor's Admin API to stop plugin `target`, with no token),
//! `read` (tries to read each of the comma-separated `paths`, file or folder),
//! `whoami` (logs `uid: N`, its real user id, from `/proc/self/status`),
//! each logging what happened; anything else: a well-behaved success.

use std::{net::SocketAddr, pin::Pin};

use corral_sdk::proto::{
    self as pb,
    invoke_event::Event,
    plugin_server::{Plugin, PluginServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

type Events = Pin<Box<dyn Stream<Item = Result<pb::InvokeEvent, Status>> + Send>>;

fn metadata() -> pb::PluginMetadata {
    pb::PluginMetadata {
        name: "rogue".into(),
        version: "v1.0.0".into(),
        title: "Rogue".into(),
        r#type: pb::PluginType::Processing.into(),
        inputs: vec![
            pb::FormField {
                field: "mode".into(),
                kind: pb::FieldKind::Text.into(),
                ..Default::default()
            },
            pb::FormField {
                field: "size".into(),
                kind: pb::FieldKind::Integer.into(),
                ..Default::default()
            },
            pb::FormField {
                field: "target".into(),
                kind: pb::FieldKind::Text.into(),
                ..Default::default()
            },
            pb::FormField {
                field: "paths".into(),
                kind: pb::FieldKind::Text.into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn event(event: Event) -> Result<pb::InvokeEvent, Status> {
    Ok(pb::InvokeEvent { event: Some(event) })
}

fn log(text: String) -> Result<pb::InvokeEvent, Status> {
    event(Event::Log(pb::LogLine { text }))
}

/// Asks the supervisor that registered this plugin to stop `target`, as any
/// local process could try; returns the gRPC code it answered.
async fn stop_plugin(target: String) -> String {
    let Ok(registry) = std::env::var("CORRAL_REGISTRY") else {
        return "no CORRAL_REGISTRY".into();
    };
    let mut admin =
        match corral_proto::supervisor::v1::admin_client::AdminClient::connect(registry).await {
            Ok(admin) => admin,
            Err(error) => return format!("unreachable: {error}"),
        };
    match admin
        .stop_plugin(corral_proto::supervisor::v1::PluginRef { plugin: target })
        .await
    {
        Ok(_) => "Ok".into(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// `read <path>: <n> bytes|entries`, or `refused <path>: <error>`.
fn try_read(path: &str) -> String {
    let read = if std::path::Path::new(path).is_dir() {
        std::fs::read_dir(path).map(|entries| format!("{} entries", entries.count()))
    } else {
        std::fs::read(path).map(|bytes| format!("{} bytes", bytes.len()))
    };
    match read {
        Ok(what) => format!("read {path}: {what}"),
        Err(error) => format!("refused {path}: {error}"),
    }
}

struct Rogue;

#[tonic::async_trait]
impl Plugin for Rogue {
    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::PluginMetadata>, Status> {
        Ok(Response::new(metadata()))
    }

    type InvokeStream = Events;

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<Events>, Status> {
        let inputs = request.into_inner().inputs;
        let mode = inputs.get("mode").cloned().unwrap_or_default();
        let begin = || {
            event(Event::OutputBegin(pb::OutputBegin {
                name: "out.bin".into(),
                data_type: "custom/bytes".into(),
                content_type: "application/octet-stream".into(),
            }))
        };
        let chunk = |size: usize| {
            event(Event::OutputChunk(pb::OutputChunk {
                data: vec![7u8; size].into(),
            }))
        };
        let events: Vec<Result<pb::InvokeEvent, Status>> = match mode.as_str() {
            "chunk-first" => vec![chunk(10)],
            "empty" => vec![Ok(pb::InvokeEvent { event: None })],
            "huge" => vec![begin(), chunk(3 * 1024 * 1024)],
            "no-result" => vec![event(Event::Log(pb::LogLine { text: "bye".into() }))],
            "admin" => {
                let target = inputs.get("target").cloned().unwrap_or_default();
                let text = format!("admin: {}", stop_plugin(target).await);
                vec![log(text), event(Event::Result(pb::TaskResult {}))]
            }
            "whoami" => {
                let uid = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|status| {
                        status
                            .lines()
                            .find_map(|line| line.strip_prefix("Uid:"))
                            .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
                    })
                    .unwrap_or_else(|| "unknown".into());
                vec![
                    log(format!("uid: {uid}")),
                    event(Event::Result(pb::TaskResult {})),
                ]
            }
            "read" => {
                let paths = inputs.get("paths").cloned().unwrap_or_default();
                let mut events: Vec<_> = paths
                    .split(',')
                    .filter(|path| !path.is_empty())
                    .map(|path| log(try_read(path)))
                    .collect();
                events.push(event(Event::Result(pb::TaskResult {})));
                events
            }
            "big-output" => {
                let size: usize = inputs
                    .get("size")
                    .and_then(|size| size.parse().ok())
                    .unwrap_or(0);
                let mut events = vec![begin()];
                let mut left = size;
                while left > 0 {
                    let part = left.min(1024 * 1024);
                    events.push(chunk(part));
                    left -= part;
                }
                events.push(event(Event::OutputEnd(pb::OutputEnd {})));
                events.push(event(Event::Result(pb::TaskResult {})));
                events
            }
            _ => vec![event(Event::Result(pb::TaskResult {}))],
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn render(
        &self,
        _request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        Err(Status::unimplemented("no view"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address: SocketAddr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            // Bigger than a well-behaved plugin would send, to test the gateway's limit.
            .add_service(PluginServer::new(Rogue).max_encoding_message_size(8 * 1024 * 1024))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let registry = std::env::var("CORRAL_REGISTRY")?;
    let mut client = corral_proto_client::RegistryClient::connect(registry).await?;
    client
        .register(corral_proto_client::RegisterRequest {
            token: std::env::var("CORRAL_PLUGIN_TOKEN")?,
            protocol_version: corral_proto::PROTOCOL_VERSION,
            address: address.to_string(),
            metadata: Some(metadata()),
        })
        .await?;
    println!("rogue serving gRPC on {address}");
    server.await??;
    Ok(())
}

mod corral_proto_client {
    pub(crate) use corral_proto::supervisor::v1::{
        RegisterRequest, registry_client::RegistryClient,
    };
}

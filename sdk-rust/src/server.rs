//! [`serve`]: the plugin's gRPC server, its registration, and its shutdown.

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use corral_proto::{
    plugin::v1::{
        self as pb,
        invoke_event::Event,
        plugin_server::{self, PluginServer},
    },
    supervisor::v1::{RegisterRequest, registry_client::RegistryClient},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Error, Metadata,
    task::{Inputs, Next, Step, Task, encode_state},
};

/// How long in-flight calls may run after SIGTERM before the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How many events a task may have in flight before its sends wait.
const EVENT_BUFFER: usize = 16;

/// A plugin: its metadata and what it does with a task.
///
/// A task runs as one or more calls: [`Plugin::invoke`] starts it; a call may
/// end it ([`Next::Done`]) or ask for a step ([`Next::step`]) with a state the
/// gateway keeps; when the step's form is submitted, [`Plugin::step`]
/// continues the task from that state, in whichever process of the plugin runs
/// then. A task waiting for a step survives every restart.
pub trait Plugin: Send + Sync + 'static {
    /// What a task keeps between its calls (JSON, at most 1 MiB); `()` for a
    /// plugin without steps or checkpoints.
    type State: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Who the plugin is and what its form asks for. Called once at start.
    fn metadata(&self) -> Metadata;

    /// Starts a task. Return [`Next::Done`] for `SUCCESS` or a step to wait
    /// for; an [`Error::task`] fails the task with its message.
    fn invoke(
        &self,
        task: Task<Self::State>,
        inputs: Inputs,
    ) -> impl Future<Output = Result<Next<Self::State>, Error>> + Send;

    /// Continues a task after its step `step.id` was submitted. The default
    /// fails the task: a plugin that asks for steps overrides it.
    fn step(
        &self,
        task: Task<Self::State>,
        step: Step<Self::State>,
    ) -> impl Future<Output = Result<Next<Self::State>, Error>> + Send {
        let _ = task;
        async move {
            Err(Error::task(format!(
                "this plugin has no step `{}`",
                step.id
            )))
        }
    }

    /// An HTML fragment for the plugin's page, e.g. a visualization of the data
    /// in `inputs`. Not implemented unless overridden.
    fn render(&self, inputs: Inputs) -> impl Future<Output = Result<String, Error>> + Send {
        let _ = inputs;
        async { Err(Error::Unimplemented) }
    }
}

/// Serves `plugin` until SIGTERM or Ctrl-C: starts its gRPC server (plugin
/// service, health, reflection) on loopback, registers with the supervisor
/// named in the environment, then shuts down gracefully.
///
/// Without `CORRAL_REGISTRY` in the environment the plugin runs on its own
/// (for debugging with grpcurl) on `CORRAL_PLUGIN_LISTEN` (default
/// `127.0.0.1:0`), and prints the address.
pub async fn serve<P: Plugin>(plugin: P) -> Result<(), Error> {
    // Handlers first: the supervisor may stop the plugin as soon as it is
    // healthy, which can be before `register` has returned here.
    let stop = StopSignals::install()?;
    let metadata = plugin.metadata();
    let listen: SocketAddr = std::env::var("CORRAL_PLUGIN_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:0".into())
        .parse()
        .map_err(|error| Error::Environment(format!("invalid CORRAL_PLUGIN_LISTEN: {error}")))?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<PluginServer<PluginService<P>>>()
        .await;
    let (reflection_v1, reflection_v1alpha) =
        corral_proto::reflection_services(&["corral.plugin.v1.Plugin"])
            .map_err(|error| Error::Environment(error.to_string()))?;
    let service = PluginService {
        plugin: Arc::new(plugin),
        metadata: metadata.to_proto(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(PluginServer::new(service))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            ),
    );
    println!("{} serving gRPC on {address}", metadata.identifier());

    if let Ok(registry) = std::env::var("CORRAL_REGISTRY") {
        // Behind a supervisor in another container the plugin listens on every
        // interface and is reached by the host name the supervisor was given.
        let advertised = match std::env::var("CORRAL_PLUGIN_HOST") {
            Ok(host) => format!("{host}:{}", address.port()),
            Err(_) => address.to_string(),
        };
        register(&registry, &advertised, &metadata).await?;
    }

    stop.received().await;
    println!("{} shutting down", metadata.identifier());
    health_reporter
        .set_not_serving::<PluginServer<PluginService<P>>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(served)) => served.map_err(Error::from),
        // A panicked server task or calls that outlived the grace: stop anyway.
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

async fn register(registry: &str, address: &str, metadata: &Metadata) -> Result<(), Error> {
    let token = std::env::var("CORRAL_PLUGIN_TOKEN").map_err(|_| {
        Error::Environment("CORRAL_REGISTRY is set but CORRAL_PLUGIN_TOKEN is not".into())
    })?;
    let mut client = RegistryClient::connect(registry.to_owned()).await?;
    let mut request = Request::new(RegisterRequest {
        token,
        protocol_version: corral_proto::PROTOCOL_VERSION,
        address: address.to_owned(),
        metadata: Some(metadata.to_proto()),
    });
    request.set_timeout(Duration::from_secs(10));
    client
        .register(request)
        .await
        .map_err(Error::Registration)?;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

struct PluginService<P> {
    plugin: Arc<P>,
    metadata: pb::PluginMetadata,
}

/// The state a call continues from; `None` when the gateway has none.
fn decode_state<S: DeserializeOwned>(state: &str) -> Result<Option<S>, Status> {
    if state.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(state).map(Some).map_err(|error| {
        Status::invalid_argument(format!("the task's state does not fit: {error}"))
    })
}

/// The event that ends a call.
fn terminal<S: Serialize>(outcome: Result<Next<S>, Error>) -> Event {
    let next = match outcome {
        Ok(next) => next,
        Err(error) => {
            return Event::Error(pb::TaskError {
                message: error.to_string(),
            });
        }
    };
    match next {
        Next::Done => Event::Result(pb::TaskResult {}),
        Next::Step(step) => match encode_state(&step.state) {
            Ok(state) => Event::StepRequired(pb::StepRequired {
                step_id: step.id,
                inputs: step
                    .fields
                    .into_iter()
                    .map(crate::Field::into_proto)
                    .collect(),
                state,
            }),
            Err(error) => Event::Error(pb::TaskError {
                message: error.to_string(),
            }),
        },
    }
}

#[tonic::async_trait]
impl<P: Plugin> plugin_server::Plugin for PluginService<P> {
    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::PluginMetadata>, Status> {
        Ok(Response::new(self.metadata.clone()))
    }

    type InvokeStream = ReceiverStream<Result<pb::InvokeEvent, Status>>;

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<Self::InvokeStream>, Status> {
        let request = request.into_inner();
        if request.task_id.is_empty() {
            return Err(Status::invalid_argument("task_id must not be empty"));
        }
        let state = decode_state::<P::State>(&request.state)?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let plugin = self.plugin.clone();
        let inputs = Inputs::from(request.inputs);
        let attempt = request.attempt.max(1);
        let run = if request.step_id.is_empty() {
            let task = Task::new(
                request.task_id,
                attempt,
                inputs.clone(),
                state,
                events.clone(),
            );
            tokio::spawn(async move { plugin.invoke(task, inputs).await })
        } else {
            // A continuation always has the state its step was asked with
            // (`null` for a plugin whose state is `()`).
            let state = match state {
                Some(state) => state,
                None => decode_state::<P::State>("null")?.ok_or_else(|| {
                    Status::invalid_argument("a step's continuation needs the task's state")
                })?,
            };
            let step = Step {
                id: request.step_id,
                inputs: Inputs::from(request.step_inputs),
                state,
            };
            let task = Task::new(request.task_id, attempt, inputs, None, events.clone());
            tokio::spawn(async move { plugin.step(task, step).await })
        };
        tokio::spawn(async move {
            let mut run = run;
            let outcome = tokio::select! {
                outcome = &mut run => outcome,
                () = events.closed() => {
                    run.abort();
                    return;
                }
            };
            let terminal = match outcome {
                // Cancelled because the caller went away: nobody to tell.
                Ok(Err(Error::Cancelled)) if events.is_closed() => return,
                Ok(outcome) => terminal(outcome),
                Err(join_error) if join_error.is_panic() => Event::Error(pb::TaskError {
                    message: "the plugin panicked while running the task".into(),
                }),
                Err(_) => return,
            };
            let _ = events
                .send(Ok(pb::InvokeEvent {
                    event: Some(terminal),
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn render(
        &self,
        request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        let inputs: HashMap<String, String> = request.into_inner().inputs;
        match self.plugin.render(Inputs::from(inputs)).await {
            Ok(html) => Ok(Response::new(pb::RenderResponse { html })),
            Err(Error::Unimplemented) => {
                Err(Status::unimplemented("this plugin has no rendered view"))
            }
            Err(error) => Err(Status::invalid_argument(error.to_string())),
        }
    }
}

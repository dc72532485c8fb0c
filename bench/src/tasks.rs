//! Tasks end to end over REST, and the floor under them: a direct gRPC invoke
//! of the plugin, and the least the store must commit for a task.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use corral_gateway::store::{
    Batch, Fence, FileKind, FileRecord, NewTask, Notices, Store, TaskStatus,
};
use corral_proto::plugin::v1::{InvokeRequest, invoke_event::Event, plugin_client::PluginClient};
use futures::future::try_join_all;
use hyper::StatusCode;
use tonic::transport::Channel;

use crate::{
    http::{Conn, final_status_of_events, path_of, task_status},
    stats::Latencies,
};

/// hello-world's process route.
pub const HELLO_PROCESS: &str = "/plugins/hello-world@v0-2-1/process/";
/// hello-world-python's (the same plugin on the Python SDK).
pub const HELLO_PYTHON_PROCESS: &str = "/plugins/hello-world-python@v0-2-1/process/";
/// How often the polling client asks, as the old runner's benchmark client does.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Tasks run before each measured run, not counted.
const WARM_UP: usize = 20;

/// How a client learns that its task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `GET /tasks/<id>/` every 10 ms until `SUCCESS` (the old runner's way).
    Polling,
    /// `GET /tasks/<id>/events` until the stream ends (ours).
    Events,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Self::Polling => "polling (10 ms)",
            Self::Events => "event stream",
        }
    }
}

/// One measured run of `n` tasks.
pub struct Run {
    pub per_second: f64,
    pub latencies: Latencies,
}

/// Runs `n` jobs over `concurrency` workers; each worker makes its own state
/// with `open` and times each `job`.
async fn drive<S, Open, OpenFut, Job, JobFut>(
    n: usize,
    concurrency: usize,
    open: Open,
    job: Job,
) -> Result<Run>
where
    S: Send + 'static,
    Open: Fn() -> OpenFut,
    OpenFut: Future<Output = Result<S>> + Send + 'static,
    Job: Fn(S, usize) -> JobFut + Clone + Send + Sync + 'static,
    JobFut: Future<Output = Result<S>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency.min(n).max(1)).map(|_| {
        let (next, job, opened) = (next.clone(), job.clone(), open());
        tokio::spawn(async move {
            let mut state = opened.await?;
            let mut latencies = Latencies::with_capacity(n / concurrency + 1);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let began = Instant::now();
                state = job(state, index).await?;
                latencies.push(began.elapsed());
            }
        })
    });
    let mut latencies = Latencies::with_capacity(n);
    for worker in try_join_all(workers).await? {
        latencies.extend(worker?);
    }
    let elapsed = started.elapsed();
    Ok(Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

/// hello-world (at its `process` route) submitted over REST until `SUCCESS` is seen.
pub async fn end_to_end(
    addr: SocketAddr,
    process: &'static str,
    client: Client,
    n: usize,
    concurrency: usize,
) -> Result<Run> {
    end_to_end_across(&[addr], process, client, n, concurrency).await
}

/// The same with the workers spread over several gateways in turn.
pub async fn end_to_end_across(
    addrs: &[SocketAddr],
    process: &'static str,
    client: Client,
    n: usize,
    concurrency: usize,
) -> Result<Run> {
    let (addrs, turn) = (addrs.to_vec(), Arc::new(AtomicUsize::new(0)));
    let open = move || Conn::open(addrs[turn.fetch_add(1, Ordering::Relaxed) % addrs.len()]);
    let job = move |conn, index| one_task(conn, process, client, index);
    drive(WARM_UP.min(n), concurrency, open.clone(), job).await?;
    drive(n, concurrency, open, job).await
}

async fn one_task(
    mut conn: Conn,
    process: &'static str,
    client: Client,
    index: usize,
) -> Result<Conn> {
    let form = format!("inputStr=hello+input+{index}");
    let created = conn.post_form(process, form).await?;
    if created.status != StatusCode::SEE_OTHER {
        bail!(
            "submit answered {}: {}",
            created.status,
            String::from_utf8_lossy(&created.body)
        );
    }
    let location = path_of(
        created
            .location
            .as_deref()
            .context("303 without Location")?,
    )
    .to_owned();
    let status = match client {
        Client::Polling => loop {
            let reply = conn.get(&location).await?;
            match task_status(&reply.body).as_deref() {
                Some("PENDING") => tokio::time::sleep(POLL_EVERY).await,
                other => break other.map(str::to_owned),
            }
        },
        Client::Events => {
            let reply = conn.get(&format!("{location}events")).await?;
            final_status_of_events(&reply.body)
        }
    };
    if status.as_deref() != Some("SUCCESS") {
        bail!("task {location} ended {status:?}");
    }
    Ok(conn)
}

/// hello-world invoked directly over gRPC, no gateway: the plugin's share.
pub async fn direct_invoke(endpoint: &str, n: usize, concurrency: usize) -> Result<Run> {
    let channel = Channel::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let open = move || {
        let client = PluginClient::new(channel.clone());
        async move { Ok(client) }
    };
    let job = |client, index| invoke_once(client, index);
    drive(WARM_UP.min(n), concurrency, open.clone(), job).await?;
    drive(n, concurrency, open, job).await
}

async fn invoke_once(
    mut client: PluginClient<Channel>,
    index: usize,
) -> Result<PluginClient<Channel>> {
    let request = InvokeRequest {
        task_id: format!("floor-{index}-{:x}", rand::random::<u64>()),
        inputs: [("inputStr".to_owned(), format!("hello input {index}"))].into(),
        ..Default::default()
    };
    let mut events = client.invoke(request).await?.into_inner();
    while let Some(event) = events.message().await? {
        match event.event {
            Some(Event::Result(_)) => return Ok(client),
            Some(Event::Error(error)) => bail!("hello-world failed: {}", error.message),
            _ => {}
        }
    }
    bail!("hello-world ended without a result")
}

/// The least the store must make durable for one hello-world task, written
/// by the gateway's own `Store` (its schema, pool and statements) with nothing
/// around it: the task row before the client gets its URL, then the task's end
/// with its log line and its output (12 bytes, in the file's row) at once.
pub async fn store_floor(database_url: &str, n: usize, concurrency: usize) -> Result<Run> {
    let store = Store::connect(database_url).await?;
    // A lease that outlasts the run, as a gateway's would be renewed; each
    // round's ends the one before (the same place), as a restart's does.
    let owner = random_id();
    store
        .begin_lease(
            &owner,
            "corral-bench",
            "http://127.0.0.1",
            24 * 3600 * 1000,
            true,
        )
        .await?;
    let fence = Fence {
        owner: owner.into(),
        attempt: 1,
    };
    let open = move || {
        let (store, fence) = (store.clone(), fence.clone());
        async move { Ok((store, fence)) }
    };
    let job = |(store, fence), _| store_one(store, fence);
    drive(WARM_UP.min(n), concurrency, open.clone(), job).await?;
    drive(n, concurrency, open, job).await
}

fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn store_one(store: Store, fence: Fence) -> Result<(Store, Fence)> {
    let id = random_id();
    store
        .create_task(&NewTask {
            id: &id,
            plugin: "hello-world@v0-2-1",
            inputs: r#"{"inputStr":"hello input"}"#,
            base_url: "http://127.0.0.1",
            uploads: &[],
            owner: &fence.owner,
            retry_of: None,
        })
        .await?;
    let mut batch = Batch::default();
    batch.log_line("result: 'hello output'");
    batch.outputs.push(FileRecord {
        id: random_id(),
        secret: random_id(),
        task_id: Some(id.clone()),
        kind: FileKind::Output,
        position: 0,
        name: Some("out.txt".into()),
        data_type: "custom/hello-world-output".into(),
        content_type: "text/plain".into(),
        size: 12,
        storage_key: String::new(),
        inline: Some(Bytes::from_static(b"hello output")),
    });
    // The stream events the gateway stores with such a task: its log line,
    // its output and its status.
    batch.event(r#"{"event":"log","data":{"text":"result: 'hello output'"}}"#);
    batch.event(r#"{"event":"output","data":{"href":"http://127.0.0.1/files/x/?file-id=y","dataType":"custom/hello-world-output","contentType":"text/plain","name":"out.txt"}}"#);
    batch.event(r#"{"event":"status","data":{"status":"SUCCESS"}}"#);
    let notices = Notices {
        task_url: "http://127.0.0.1/tasks/x/",
        events: &["status", "details"],
    };
    store
        .finish(&id, &fence, TaskStatus::Success, &batch, notices)
        .await?;
    Ok((store, fence))
}

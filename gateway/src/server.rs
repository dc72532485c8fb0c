//! The HTTP server: the router on hyper, with the limits a server facing the
//! open network needs (axum's own `serve` sets none of them): a cap on open
//! connections, a deadline for each request head (which also closes idle
//! keep-alive connections), a deadline for a new connection's first request
//! (HTTP/1 or HTTP/2), and HTTP/2 stream, header and keep-alive limits.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

/// Limits on the connections the gateway serves.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client has to send a request head: a new connection's first
    /// one, and each next one on a kept-alive connection (an idle connection
    /// is closed after this long).
    pub header_timeout: Duration,
    /// Most concurrent streams of one HTTP/2 connection.
    pub max_http2_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            max_http2_streams: 128,
        }
    }
}

/// The largest request head (all header fields) an HTTP/2 client may send.
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// HTTP/2 pings find a dead or cut-off peer: one each interval, the
/// connection closed when it goes unanswered for the timeout.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams an HTTP/2 client may open and reset before it is sent away (the
/// "rapid reset" attack).
const HTTP2_MAX_PENDING_RESETS: usize = 32;
/// How long the accept loop rests after an accept error (e.g. no file
/// descriptor left), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop`; then takes no new connection,
/// asks open ones to finish (HTTP/1 after the current response, HTTP/2 with a
/// GOAWAY), and returns once they have.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ConnectionLimits,
    stop: CancellationToken,
) {
    let builder = builder(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        connections.spawn(connection(
            builder.clone(),
            stream,
            router.clone(),
            limits.header_timeout,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_http2_streams)
        .max_header_list_size(MAX_HEADER_BYTES)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}

/// One connection, until it ends, idles out, or the server stops.
async fn connection(
    builder: Builder<TokioExecutor>,
    stream: TcpStream,
    router: Router,
    first_request_within: Duration,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // Small writes (an SSE event, a short reply) go out at once: without
    // TCP_NODELAY, Nagle's algorithm and the client's delayed ACK hold the
    // second write of a response for 40 ms.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "failed to set TCP_NODELAY");
    }
    // hyper's head deadline starts once it knows the protocol: a client that
    // sends nothing at all, or only an HTTP/2 preface, is timed here.
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let requested = requested.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            let mut router = router.clone();
            async move {
                let response: Result<_, Infallible> = router.call(request.map(Body::new)).await;
                response
            }
        })
    };
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(served);
    let first_request = tokio::time::sleep(first_request_within);
    tokio::pin!(first_request);
    let mut closing = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request, if !requested.load(Ordering::Relaxed) => {
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!("closing a connection that sent no request");
                    return;
                }
            }
            () = stop.cancelled(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

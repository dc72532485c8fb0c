//! The plugin proxy: a gateway on another machine calls a plugin through its
//! host's supervisor, which serves `corral.plugin.v1.Plugin` on its own port
//! and forwards each call, unchanged and streaming both ways, to the plugin
//! named by the `corral-plugin` header. Plugins stay on their host's loopback;
//! only a caller with the admin token gets through, and the token is not
//! passed on. A caller that goes away (or whose link dies: HTTP/2 keepalives
//! notice) cancels the call, so the plugin sees the cancellation.

use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use corral_proto::admin::{AUTHORIZATION, PLUGIN_HEADER, RequireAdminToken};
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Bytes, Service, http},
    server::NamedService,
    transport::{Channel, Endpoint},
};

use crate::supervisor::Supervisor;

/// Forwards plugin calls to this host's plugins.
#[derive(Clone)]
pub(crate) struct PluginProxy {
    supervisor: Arc<Supervisor>,
    check: RequireAdminToken,
    /// One channel per plugin endpoint.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PluginProxy {
    pub(crate) fn new(supervisor: Arc<Supervisor>, check: RequireAdminToken) -> Self {
        Self {
            supervisor,
            check,
            channels: Arc::default(),
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, Status> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| Status::internal(format!("unusable plugin endpoint: {error}")))?
            .tcp_nodelay(true)
            .connect_lazy();
        // Endpoints of processes that are gone are not kept.
        if channels.len() > 256 {
            channels.clear();
        }
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    async fn forward(
        self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Status> {
        let headers = request.headers_mut();
        let authorized = headers
            .get(AUTHORIZATION)
            .is_some_and(|value| self.check.allows(value.as_bytes()));
        if !authorized {
            return Err(Status::unauthenticated(
                "calls through the plugin proxy need the admin token: send \
                 `authorization: Bearer <token>`",
            ));
        }
        let plugin = headers
            .get(PLUGIN_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "name the plugin (its folder on this host) in the `{PLUGIN_HEADER}` header"
                ))
            })?;
        headers.remove(AUTHORIZATION);
        headers.remove(PLUGIN_HEADER);
        let endpoint = self.supervisor.ready_endpoint(&plugin).ok_or_else(|| {
            Status::unavailable(format!("plugin {plugin} is not ready on this host"))
        })?;
        let mut channel = self.channel(&endpoint)?;
        let unreachable = |error: tonic::transport::Error| {
            Status::unavailable(format!("plugin {plugin} unreachable: {error}"))
        };
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(unreachable)?;
        let guard = InFlight::new(self.supervisor.in_flight().clone());
        let response = channel.call(request).await.map_err(unreachable)?;
        // The call counts as running until its last event has gone out.
        Ok(response.map(|body| {
            Body::new(Tracked {
                inner: body,
                _guard: guard,
            })
        }))
    }
}

impl NamedService for PluginProxy {
    const NAME: &'static str = "corral.plugin.v1.Plugin";
}

impl Service<http::Request<Body>> for PluginProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move {
            Ok(proxy
                .forward(request)
                .await
                .unwrap_or_else(|status| status.into_http()))
        })
    }
}

/// One call running through the proxy, counted while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its call counted until it is dropped.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

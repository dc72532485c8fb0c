//! A lean HTTP/1.1 client for load: one keep-alive connection per worker, no
//! pooling or redirects, so what is measured is the server.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// One connection to the gateway.
pub struct Conn {
    sender: SendRequest<Body>,
    host: String,
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }

    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply> {
        let request = self.request(Method::GET, path).body(Empty::new().boxed())?;
        self.read(request).await
    }

    pub async fn post_form(&mut self, path: &str, form: String) -> Result<Reply> {
        let request = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)).boxed())?;
        self.read(request).await
    }

    /// GETs `path` and counts the body's bytes as they come, keeping none.
    pub async fn download(&mut self, path: &str) -> Result<u64> {
        let request = self.request(Method::GET, path).body(Empty::new().boxed())?;
        let response = self.send(request).await?;
        if response.status() != StatusCode::OK {
            bail!("GET {path}: {}", response.status());
        }
        let mut body = response.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    async fn read(&mut self, request: Request<Body>) -> Result<Reply> {
        let response = self.send(request).await?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            location,
            body,
        })
    }
}

/// The path of an absolute URL the gateway returned (`http://host/tasks/…` → `/tasks/…`).
pub fn path_of(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or(url)
}

/// The `status` field of a task status body.
pub fn task_status(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("status")?.as_str().map(str::to_owned)
}

/// The task's final status from a whole event stream: the last event's
/// `status` (a `snapshot` of a finished task, or the closing `status` event).
pub fn final_status_of_events(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data:")))
        .filter_map(|data| task_status(data.trim().as_bytes()))
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_statuses_are_read_from_what_the_gateway_sends() {
        assert_eq!(path_of("http://127.0.0.1:5/tasks/a/"), "/tasks/a/");
        assert_eq!(path_of("/tasks/a/"), "/tasks/a/");
        let events = b"event: snapshot\ndata: {\"status\":\"PENDING\"}\n\n\
                       event: log\ndata: {\"text\":\"x\"}\n\n\
                       event: status\ndata: {\"status\":\"SUCCESS\"}\n\n";
        assert_eq!(final_status_of_events(events).as_deref(), Some("SUCCESS"));
    }
}

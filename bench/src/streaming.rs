//! Streaming: the `bulk` example writes one large output; the figures are the
//! rate from plugin to file store (submit → `SUCCESS`), from file store to a
//! client download, and the gateway's memory meanwhile.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use hyper::StatusCode;

use crate::{
    http::{Conn, final_status_of_events, path_of},
    procs::Gateway,
};

const BULK_PROCESS: &str = "/plugins/bulk@v1-0-0/process/";

pub struct Streaming {
    pub bytes: u64,
    /// Plugin → file store, MB/s (10^6 bytes).
    pub write_mb_s: f64,
    /// File store → client, MB/s.
    pub read_mb_s: f64,
    pub rss_before: u64,
    pub peak_rss: u64,
}

/// Streams `bytes` through `gateway` (fresh: its peak memory is read).
pub async fn measure(gateway: &Gateway, bytes: u64) -> Result<Streaming> {
    let mut conn = Conn::open(gateway.addr).await?;
    // One small run first: the lazily made parts of the gateway exist before the baseline.
    bulk(&mut conn, 1 << 20).await?;
    let rss_before = gateway.process.rss()?;
    let started = Instant::now();
    let output = bulk(&mut conn, bytes).await?;
    let write = started.elapsed();
    let started = Instant::now();
    let read = conn.download(&output).await?;
    let read_time = started.elapsed();
    if read != bytes {
        bail!("downloaded {read} bytes of {bytes}");
    }
    let mb = bytes as f64 / 1e6;
    Ok(Streaming {
        bytes,
        write_mb_s: mb / write.as_secs_f64(),
        read_mb_s: mb / read_time.as_secs_f64(),
        rss_before,
        peak_rss: gateway.process.peak_rss()?,
    })
}

/// Runs one bulk task of `bytes`; returns its output's path.
async fn bulk(conn: &mut Conn, bytes: u64) -> Result<String> {
    let created = conn
        .post_form(BULK_PROCESS, format!("size={bytes}"))
        .await?;
    if created.status != StatusCode::SEE_OTHER {
        bail!("bulk submit answered {}", created.status);
    }
    let task = path_of(created.location.as_deref().context("no Location")?).to_owned();
    let events = conn.get(&format!("{task}events")).await?;
    let status = final_status_of_events(&events.body);
    if status.as_deref() != Some("SUCCESS") {
        bail!("bulk task ended {status:?}");
    }
    let reply = conn.get(&task).await?;
    let body: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let href = body["outputs"][0]["href"]
        .as_str()
        .context("the bulk task has no output")?;
    Ok(path_of(href).to_owned())
}

//! Read load: `concurrency` keep-alive connections GET one path for a while.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use futures::future::try_join_all;
use hyper::StatusCode;

use crate::{http::Conn, stats::Latencies};

pub struct Reads {
    pub per_second: f64,
    pub latencies: Latencies,
}

/// GETs `path` over `concurrency` connections for `duration` (after a short warm-up).
pub async fn load(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<Reads> {
    run(addr, path, concurrency, duration / 10).await?;
    run(addr, path, concurrency, duration).await
}

async fn run(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<Reads> {
    let started = Instant::now();
    let until = started + duration;
    let workers = (0..concurrency).map(|_| {
        let path = path.to_owned();
        tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut latencies = Latencies::with_capacity(16 * 1024);
            while Instant::now() < until {
                let began = Instant::now();
                let reply = conn.get(&path).await?;
                if reply.status != StatusCode::OK {
                    bail!("GET {path}: {}", reply.status);
                }
                latencies.push(began.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    });
    let mut latencies = Latencies::default();
    for worker in try_join_all(workers).await? {
        latencies.extend(worker?);
    }
    Ok(Reads {
        per_second: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    })
}

/// GETs each of `paths` once, one at a time: the latency of reads that no
/// cache has seen.
pub async fn each_once(addr: SocketAddr, paths: &[String]) -> Result<Latencies> {
    let mut conn = Conn::open(addr).await?;
    let mut latencies = Latencies::with_capacity(paths.len());
    for path in paths {
        let began = Instant::now();
        let reply = conn.get(path).await?;
        if reply.status != StatusCode::OK {
            bail!("GET {path}: {}", reply.status);
        }
        latencies.push(began.elapsed());
    }
    Ok(latencies)
}

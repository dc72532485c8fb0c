//! Plugin lifecycle figures: start → ready, SIGKILL → ready again, supervisor RSS.
//!
//! `cargo build --release --workspace --bins --examples && cargo bench --bench lifecycle`
//! (the plugins must be built in the same profile). Prints medians; asserts nothing.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{PluginFolders, Supervisor, built, versioned_manifest};
use corral_proto::supervisor::v1::{PluginRef, PluginState};
use nix::sys::signal::Signal;

const RUNS: usize = 20;

fn median(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let middle = samples[samples.len() / 2];
    format!(
        "median {:.2} ms (min {:.2}, max {:.2}, n={})",
        middle.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

async fn start_to_ready(supervisor: &Supervisor, plugin: &str) -> Duration {
    let mut admin = supervisor.admin().await;
    let reference = || PluginRef {
        plugin: plugin.into(),
    };
    admin.stop_plugin(reference()).await.unwrap();
    let started = Instant::now();
    admin.start_plugin(reference()).await.unwrap();
    supervisor.ready(plugin).await;
    started.elapsed()
}

async fn kill_to_ready(supervisor: &Supervisor, plugin: &str) -> Duration {
    let before = supervisor.ready(plugin).await;
    let started = Instant::now();
    common::signal(before.pid, Signal::SIGKILL);
    supervisor
        .wait_for(plugin, "ready again", |status| {
            status.state == PluginState::Ready as i32 && status.pid != before.pid
        })
        .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let folders = PluginFolders::new();
    let hello = format!(
        "command = {:?}\n[restart]\nbackoff_initial = \"0s\"\nmax_restarts = 1000\n",
        built("corral-plugin-hello-world").display().to_string()
    );
    folders.add("hello-world", &hello);
    let python = common::repo().join("plugins/csv-visualization");
    let csv = format!(
        "command = {:?}\nargs = [\"plugin.py\"]\nworking_dir = {:?}\n\
         [env]\nPYTHONUNBUFFERED = \"1\"\n[restart]\nbackoff_initial = \"0s\"\nmax_restarts = 1000\n",
        python.join(".venv/bin/python").display().to_string(),
        python.display().to_string()
    );
    folders.add("csv-visualization", &csv);
    let supervisor = Supervisor::start(&[folders.path()]);
    for plugin in ["hello-world", "csv-visualization"] {
        supervisor.ready(plugin).await;
        let mut spawn = Vec::new();
        let mut kill = Vec::new();
        for _ in 0..RUNS {
            spawn.push(start_to_ready(&supervisor, plugin).await);
            kill.push(kill_to_ready(&supervisor, plugin).await);
        }
        println!(
            "{plugin}: start → registered and healthy: {}",
            median(spawn)
        );
        println!(
            "{plugin}: SIGKILL → healthy again (backoff 0): {}",
            median(kill)
        );
    }
    drop(supervisor);

    let reference = Supervisor::start(&[&common::reference_plugins()]);
    for plugin in [
        "hello-world",
        "hello-world-multi-step",
        "file-upload",
        "json-visualization",
        "csv-visualization",
    ] {
        reference.ready(plugin).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "supervisor RSS with the 5 reference plugins: {} KiB",
        rss_kib(reference.child.id())
    );
    drop(reference);

    let many = PluginFolders::new();
    for copy in 0..50 {
        many.add(
            &format!("hello-{copy}"),
            &versioned_manifest("hello", &format!("v1.0.{copy}"), ""),
        );
    }
    let supervisor = Supervisor::start(&[many.path()]);
    let started = Instant::now();
    for copy in 0..50 {
        supervisor.ready(&format!("hello-{copy}")).await;
    }
    println!(
        "50 SDK plugins: all ready {:.0} ms after the supervisor printed its address",
        started.elapsed().as_secs_f64() * 1e3
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "supervisor RSS with 50 plugins: {} KiB",
        rss_kib(supervisor.child.id())
    );
}

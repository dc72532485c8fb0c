//! `corral`: the one binary. Each subcommand is an entry point.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use corral_supervisor::{RunningSupervisor, Shutdown, SupervisorConfig};

/// A plugin runner: every plugin its own supervised process, reached over gRPC.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Spawn and supervise the plugins; serve the registry and admin gRPC APIs.
    Supervisor(SupervisorArgs),
}

#[derive(Debug, clap::Args)]
struct SupervisorArgs {
    /// Address of the gRPC server (registry, admin, health, reflection).
    #[arg(long, env = "CORRAL_GRPC", default_value = "127.0.0.1:5006")]
    grpc: SocketAddr,
    /// Folders holding one plugin folder (with a plugin.toml) each; `:`-separated.
    #[arg(
        long,
        env = "PLUGIN_FOLDERS",
        value_delimiter = ':',
        default_value = "./plugins"
    )]
    plugin_folders: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("corral: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Supervisor(args) => supervisor(args).await,
    }
}

async fn supervisor(args: SupervisorArgs) -> anyhow::Result<()> {
    let config = SupervisorConfig {
        grpc: args.grpc,
        plugin_folders: args.plugin_folders,
    };
    let running = RunningSupervisor::start(&config)
        .await
        .context("failed to start the supervisor")?;
    println!(
        "corral supervisor: gRPC listening on {}",
        running.local_addr()
    );
    let shutdown = Shutdown::default();
    tokio::spawn(forward_signals(shutdown.clone()));
    running
        .serve(shutdown)
        .await
        .context("supervisor stopped with an error")
}

/// First SIGTERM or Ctrl-C: graceful shutdown. Second: skip the grace periods.
async fn forward_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("failed to install signal handlers");
        return;
    };
    for stage in [&shutdown.graceful, &shutdown.immediate] {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown requested");
        stage.cancel();
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

//! `corral`: the one binary. Each subcommand is an entry point.

mod config;
mod ctl;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use corral_gateway::{AuthConfig, GatewayConfig, RunningGateway};
use corral_supervisor::{RunningSupervisor, Shutdown, SupervisorConfig, admin_token};
use tokio_util::sync::CancellationToken;

/// A plugin runner: every plugin its own supervised process, reached over gRPC.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
struct Cli {
    /// A TOML file of settings (keys are the flags' names: `http`, `database_url`,
    /// `plugin_folders`, …). Flags and environment variables override it.
    #[arg(long, global = true, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
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
    /// Supervisor and gateway in one process, with the embedded defaults
    /// (SQLite and output files in --data-dir).
    Serve(ServeArgs),
    /// Spawn and supervise the plugins; serve the registry and admin gRPC APIs.
    Supervisor(SupervisorCommandArgs),
    /// Serve the QHAna plugin REST API over the plugins of a supervisor.
    Gateway(GatewayArgs),
    /// Operate a running Corral: plugins, their logs, tasks.
    Ctl(ctl::CtlArgs),
    /// Build the environment of every plugin that declares one (`environment =
    /// "uv"`), as the supervisor does before it starts a plugin; unchanged ones
    /// cost nothing. Fails when any build failed; the others are built anyway.
    Envs(EnvsArgs),
    /// Print the REST API's OpenAPI document (as `/api-spec.json` serves it).
    ApiSpec,
    /// Print a shell completion script (`corral completions bash >
    /// /etc/bash_completion.d/corral`).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page, roff (`corral man > corral.1; man ./corral.1`).
    Man,
    /// Check a running Corral, for container health checks: exit 0 when it
    /// answers healthy, else 1 with one line saying why.
    Health(HealthArgs),
    /// Run a program confined (Landlock) to the given paths: how the supervisor
    /// starts each plugin.
    #[command(hide = true)]
    Confine(ConfineArgs),
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// The gateway URL to GET (`…/ready` for readiness).
    #[arg(long, default_value = "http://127.0.0.1:5005/health")]
    url: String,
    /// Check a supervisor instead: its gRPC URL (grpc.health.v1).
    #[arg(long, conflicts_with = "url")]
    grpc: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    timeout: std::time::Duration,
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is no error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("failed to write to stdout")
        }
        _ => Ok(()),
    }
}

/// The innermost cause of an error, the one a person can act on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// `corral health`: one request; its answer decides.
async fn health(args: HealthArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.grpc {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid supervisor URL `{url}`"))?
            .connect_timeout(args.timeout)
            .timeout(args.timeout);
        let channel = endpoint.connect().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach the supervisor at {url}: {}",
                root_cause(&error)
            )
        })?;
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map_err(|status| anyhow::anyhow!("{url}: {}", status.message()))?
            .into_inner();
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
        anyhow::ensure!(
            answer.status == serving as i32,
            "{url}: not serving (status {})",
            answer.status
        );
        return Ok(());
    }
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("failed to set up the HTTP client")?;
    let response =
        client.get(&args.url).send().await.map_err(|error| {
            anyhow::anyhow!("cannot reach {}: {}", args.url, root_cause(&error))
        })?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "{}: {status}", args.url);
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ConfineArgs {
    /// A path the program may read and execute (repeatable).
    #[arg(long)]
    read: Vec<PathBuf>,
    /// A path the program may also write (repeatable).
    #[arg(long)]
    write: Vec<PathBuf>,
    /// The program and its arguments, after `--`.
    #[arg(required = true, last = true)]
    command: Vec<std::ffi::OsString>,
}

/// Confines this process, then becomes the program (it keeps the restrictions
/// and this process id). Returns only on failure.
fn confine(args: ConfineArgs) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let confinement = corral_supervisor::confine::Confinement {
        read: args.read,
        write: args.write,
    };
    if let Err(error) = confinement.enforce() {
        eprintln!("corral: {error}");
        return ExitCode::from(126);
    }
    let Some((program, arguments)) = args.command.split_first() else {
        return ExitCode::from(2);
    };
    let error = std::process::Command::new(program).args(arguments).exec();
    eprintln!(
        "corral: failed to run {}: {error}",
        program.to_string_lossy()
    );
    ExitCode::from(127)
}

#[derive(Debug, clap::Args)]
struct EnvsArgs {
    /// Folders holding one plugin folder (with a plugin.toml) each; `:`-separated.
    #[arg(
        long,
        env = "PLUGIN_FOLDERS",
        value_delimiter = ':',
        default_value = "./plugins"
    )]
    plugin_folders: Vec<PathBuf>,
    /// Print the installer's output.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    supervisor: SupervisorArgs,
    #[command(flatten)]
    gateway: GatewayOptions,
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// The gRPC URL of each plugin host's supervisor, comma-separated. With
    /// one supervisor on this machine plugins are called on their loopback
    /// endpoints; otherwise through their host's supervisor, which checks the
    /// admin token (all hosts must share it).
    #[arg(
        long,
        env = "CORRAL_SUPERVISOR",
        default_value = "http://127.0.0.1:5006",
        value_delimiter = ','
    )]
    supervisor: Vec<String>,
    /// File holding the supervisor's admin token (default: admin-token in
    /// --data-dir, where a supervisor with the same data dir writes it);
    /// CORRAL_ADMIN_TOKEN gives the token itself.
    #[arg(long, env = "CORRAL_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    gateway: GatewayOptions,
}

#[derive(Debug, clap::Args)]
struct GatewayOptions {
    /// Address of the REST API.
    #[arg(long, env = "CORRAL_HTTP", default_value = "127.0.0.1:5005")]
    http: SocketAddr,
    /// Task database: postgres://… or sqlite:… (default: SQLite in --data-dir).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Folder for the embedded database and the output files.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
    /// How many reverse proxies' X-Forwarded-* headers to trust.
    #[arg(long, env = "REVERSE_PROXY_COUNT", default_value_t = 0)]
    reverse_proxy_count: usize,
    /// Shared secret of HS256 bearer tokens, from the environment or the config
    /// file only: on the command line every local user could read it (`ps`).
    #[arg(
        long,
        env = "CORRAL_JWT_SECRET",
        hide_env_values = true,
        conflicts_with_all = ["jwt_public_key", "jwt_secret_file"]
    )]
    jwt_secret: Option<String>,
    /// File holding the shared secret of HS256 bearer tokens (surrounding
    /// whitespace is ignored).
    #[arg(
        long,
        env = "CORRAL_JWT_SECRET_FILE",
        conflicts_with = "jwt_public_key"
    )]
    jwt_secret_file: Option<PathBuf>,
    /// PEM file with the RSA (RS256) or EC P-256 (ES256) public key of bearer tokens.
    #[arg(long, env = "CORRAL_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// Required `aud` of bearer tokens.
    #[arg(long, env = "CORRAL_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Required `iss` of bearer tokens.
    #[arg(long, env = "CORRAL_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Demand a valid bearer token on every route (by default only the admin
    /// routes need one, as in the old runner).
    #[arg(long, env = "CORRAL_REQUIRE_AUTH")]
    require_auth: bool,
    /// The largest request body, in bytes (larger: 413).
    #[arg(long, env = "CORRAL_MAX_BODY_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_body_bytes: usize,
    /// The largest output file a plugin may write, in bytes (larger: the task fails).
    #[arg(long, env = "CORRAL_MAX_OUTPUT_BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    max_output_bytes: u64,
    /// How long running tasks may take to finish after SIGTERM or Ctrl-C (then they
    /// end FAILURE); a second signal ends them at once.
    #[arg(long, env = "CORRAL_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: std::time::Duration,
    /// How long a webhook notice is retried (with backoff, in order per
    /// subscriber) before it is given up.
    #[arg(long, env = "CORRAL_WEBHOOK_RETRY_FOR", default_value = "1h", value_parser = humantime::parse_duration)]
    webhook_retry_for: std::time::Duration,
    /// The token role (`roles` claim) that may start, stop and restart plugins.
    #[arg(long, env = "CORRAL_ADMIN_ROLE", default_value = "admin")]
    admin_role: String,
    /// Most HTTP connections open at once; more wait until one closes.
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// How long a client may take to send a request head; a connection idle
    /// for this long (or one that never sends a request) is closed.
    #[arg(long, env = "CORRAL_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: std::time::Duration,
    /// How long the gateway's lease lasts after its last renewal: the longest
    /// the running tasks of a gateway that died wait before another adopts
    /// them (longer rides out a database failover without re-running tasks).
    #[arg(long, env = "CORRAL_LEASE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// How often the lease is renewed and orphaned tasks are looked for.
    #[arg(long, env = "CORRAL_LEASE_RENEW", default_value = "1s", value_parser = humantime::parse_duration)]
    lease_renew: std::time::Duration,
    /// Where output files and uploads are kept: `database` (shared by every
    /// gateway on it), `local` (a folder in --data-dir, one gateway only), or
    /// `auto` (the database on PostgreSQL, local on SQLite).
    #[arg(long, env = "CORRAL_FILE_STORE", default_value = "auto", value_parser = ["auto", "local", "database"])]
    file_store: String,
    /// How often uploads no task took and files no task references (a crash's
    /// leftovers, an hour old) are swept away.
    #[arg(long, env = "CORRAL_SWEEP_EVERY", default_value = "10m", value_parser = humantime::parse_duration)]
    sweep_every: std::time::Duration,
    /// Redis (`redis://host:6379/0`), to carry task events between gateways
    /// at once; without it, followers on other gateways read the database
    /// every second.
    #[arg(long, env = "CORRAL_REDIS_URL")]
    redis_url: Option<String>,
    /// The prefix of this deployment's Redis channels (several deployments
    /// may share one Redis).
    #[arg(long, env = "CORRAL_REDIS_PREFIX", default_value = "corral")]
    redis_prefix: String,
    /// The base URL plugins read uploaded input files from, e.g.
    /// `http://gateway-1:5005`: needed when plugins run on another machine or
    /// container (default: this gateway's own address, on loopback when it
    /// listens on every interface).
    #[arg(long, env = "CORRAL_INTERNAL_URL")]
    internal_url: Option<String>,
    /// Follow the plugin hosts that announce themselves in Redis (--redis-url,
    /// --redis-prefix), besides the --supervisor list; an announcement counts
    /// only when signed with the admin token.
    #[arg(long, env = "CORRAL_DISCOVER_HOSTS", requires = "redis_url")]
    discover_hosts: bool,
}

impl GatewayOptions {
    fn config(&self, supervisor_url: String) -> anyhow::Result<GatewayConfig> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "failed to create the data directory {}",
                self.data_dir.display()
            )
        })?;
        let database_url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("corral.db").display()
            ),
        };
        let supported = ["postgres://", "postgresql://", "sqlite:"];
        if !supported
            .iter()
            .any(|scheme| database_url.starts_with(scheme))
        {
            let shown: String = database_url.chars().take(40).collect();
            anyhow::bail!("unsupported database URL `{shown}`: expected postgres://… or sqlite:…");
        }
        let mut config = GatewayConfig::new(
            self.http,
            supervisor_url,
            database_url,
            self.data_dir.clone(),
        );
        config.trusted_proxies = self.reverse_proxy_count;
        config.max_body_bytes = self.max_body_bytes;
        config.max_output_bytes = self.max_output_bytes;
        config.webhook_retry_for = self.webhook_retry_for;
        config.limits.max_connections = self.max_connections;
        config.limits.header_timeout = self.header_timeout;
        if self.lease_renew.is_zero() || self.lease_ttl < self.lease_renew * 2 {
            anyhow::bail!("--lease-ttl must be at least twice --lease-renew (which must not be 0)");
        }
        config.file_store = match self.file_store.as_str() {
            "local" => corral_gateway::FileStoreKind::Local,
            "database" => corral_gateway::FileStoreKind::Database,
            _ => corral_gateway::FileStoreKind::Auto,
        };
        if self.sweep_every.is_zero() {
            anyhow::bail!("--sweep-every must not be 0");
        }
        config.sweep_every = self.sweep_every;
        config.redis_url = self.redis_url.clone();
        config.redis_prefix = self.redis_prefix.clone();
        if let Some(url) = &self.internal_url {
            let valid = reqwest::Url::parse(url)
                .is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https"));
            if !valid {
                anyhow::bail!("--internal-url must be an http:// or https:// URL, not `{url}`");
            }
        }
        config.internal_url = self.internal_url.clone();
        config.discover_hosts = self.discover_hosts;
        config.lease = corral_gateway::LeaseSettings {
            ttl: self.lease_ttl,
            renew_every: self.lease_renew,
        };
        let secret = match &self.jwt_secret_file {
            Some(path) => Some(read_secret(path, "JWT secret")?),
            None => self.jwt_secret.clone(),
        };
        let public_key = match &self.jwt_public_key {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("failed to read the JWT public key {}", path.display())
            })?),
            None => None,
        };
        config.auth = AuthConfig::new(
            secret.as_deref(),
            public_key.as_deref(),
            self.jwt_audience.clone(),
            self.jwt_issuer.clone(),
            self.require_auth,
            self.admin_role.clone(),
        )?;
        Ok(config)
    }
}

#[derive(Debug, clap::Args)]
struct SupervisorCommandArgs {
    #[command(flatten)]
    supervisor: SupervisorArgs,
    /// Redis (`redis://host:6379/0`) to announce this plugin host in: gateways
    /// on the same Redis and prefix follow it without being given its URL.
    #[arg(long, env = "CORRAL_REDIS_URL")]
    redis_url: Option<String>,
    /// The prefix of this deployment's Redis keys (the gateways' --redis-prefix).
    #[arg(long, env = "CORRAL_REDIS_PREFIX", default_value = "corral")]
    redis_prefix: String,
    /// The URL gateways reach this supervisor by, as announced in Redis
    /// (default: http:// and the bound --grpc address, unless that is every
    /// interface).
    #[arg(long, env = "CORRAL_ADVERTISE_URL")]
    advertise_url: Option<String>,
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
    /// The host name a gateway on another machine reaches the plugins by (e.g. a
    /// container's service name); plugins then listen on every interface.
    #[arg(long, env = "CORRAL_PLUGIN_HOST")]
    plugin_host: Option<String>,
    /// File holding the token of the Admin API (`authorization: Bearer …`),
    /// created owner-only with a random token when missing (default:
    /// admin-token in the data dir, ./instance for `corral supervisor`);
    /// CORRAL_ADMIN_TOKEN gives the token itself.
    #[arg(long, env = "CORRAL_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Run plugins without confinement (by default each is confined with
    /// Landlock to its folder, the system's libraries and a temporary folder;
    /// a kernel without Landlock refuses to start unless this is given).
    #[arg(long, env = "CORRAL_UNCONFINED_PLUGINS")]
    unconfined_plugins: bool,
    /// The user (name or number) plugins run as, with its primary group: for a
    /// supervisor running as root. Their folders, environments and programs
    /// must be readable by that user.
    #[arg(long, env = "CORRAL_PLUGIN_USER")]
    plugin_user: Option<String>,
}

impl SupervisorArgs {
    fn config(self, data_dir: &std::path::Path) -> anyhow::Result<SupervisorConfig> {
        let path = self
            .admin_token_file
            .unwrap_or_else(|| data_dir.join(ADMIN_TOKEN_FILE));
        let admin_token = admin_token::from_environment_or(&path, true)
            .with_context(|| format!("failed to set up the admin token in {}", path.display()))?;
        Ok(SupervisorConfig {
            grpc: self.grpc,
            plugin_folders: self.plugin_folders,
            plugin_host: self.plugin_host,
            admin_token,
            confine_plugins: !self.unconfined_plugins,
            plugin_user: self
                .plugin_user
                .as_deref()
                .map(corral_supervisor::confine::PluginUser::lookup)
                .transpose()
                .map_err(|error| anyhow::anyhow!("--plugin-user: {error}"))?,
        })
    }
}

/// The admin token's file name in the data dir.
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The data dir of a command that has no --data-dir.
const DEFAULT_DATA_DIR: &str = "./instance";

/// Reads a secret from a file, without its surrounding whitespace.
fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the {what} from {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("the {what} file {} is empty", path.display());
    }
    Ok(secret.to_owned())
}

/// Flags whose values every local user could read in the process list.
const SECRET_FLAGS: &[(&str, &str)] = &[("--jwt-secret", "--jwt-secret-file or CORRAL_JWT_SECRET")];

/// Flags whose values are short-lived credentials: taken, with a warning.
const WARNED_FLAGS: &[(&str, &str)] = &[("--token", "CORRAL_TOKEN")];

/// A secret given on the command line is refused, with what to use instead; a
/// short-lived token is taken with a warning.
fn refuse_secrets_on_argv(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let given = |arg: &str, flag: &str| {
        arg.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
    };
    // What follows `--` is not ours (a confined plugin's own arguments).
    for arg in args.iter().take_while(|arg| *arg != "--") {
        let arg = arg.to_string_lossy();
        for (flag, instead) in SECRET_FLAGS {
            if given(&arg, flag) {
                anyhow::bail!(
                    "{flag} on the command line is visible to every local user (ps); use {instead}"
                );
            }
        }
        for (flag, instead) in WARNED_FLAGS {
            if given(&arg, flag) {
                eprintln!(
                    "corral: warning: {flag} on the command line is visible to every local user (ps); prefer {instead}"
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The trampoline reads no config file (the plugin's arguments and
    // environment are not ours) and starts nothing.
    if args.get(1).is_some_and(|arg| arg == "confine") {
        return match Cli::try_parse_from(&args) {
            Ok(Cli {
                command: Command::Confine(confine_args),
                ..
            }) => confine(confine_args),
            Ok(_) => ExitCode::from(2),
            Err(error) => error.exit(),
        };
    }
    if let Err(error) = refuse_secrets_on_argv(&args) {
        eprintln!("corral: {error}");
        return ExitCode::FAILURE;
    }
    let command = match config::apply(Cli::command(), &args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("corral: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::from_arg_matches(&command.get_matches_from(args)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let default_level = if matches!(
        cli.command,
        Command::Ctl(_)
            | Command::Envs(_)
            | Command::ApiSpec
            | Command::Completions { .. }
            | Command::Man
            | Command::Health(_)
    ) {
        "warn"
    } else {
        "info"
    };
    // Log lines are written by a thread of their own: never a blocking write on
    // the async runtime. Dropping the guard (at return) flushes what is queued.
    let _flush_logs_at_exit = init_tracing(cli.log_format, default_level);
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
        Command::Gateway(args) => gateway(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Ctl(args) => ctl::run(args).await,
        Command::Envs(args) => envs(args).await,
        Command::ApiSpec => {
            println!("{}", corral_gateway::openapi::document_json());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "corral", &mut script);
            print_all(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("failed to render the manual page")?;
            print_all(&page)
        }
        Command::Health(args) => health(args).await,
        // `corral confine …` is run by `main` before anything starts; with a
        // global flag before it, it is not the supervisor's trampoline.
        Command::Confine(_) => anyhow::bail!("`corral confine` cannot run here"),
    }
}

async fn envs(args: EnvsArgs) -> anyhow::Result<()> {
    const SHOWN_LINES: usize = 20;
    use corral_supervisor::environment::{self, EnvironmentKind, Prepared};
    let discovered = corral_supervisor::manifest::discover(&args.plugin_folders)
        .context("failed to read the plugin folders")?;
    let mut failed = Vec::new();
    for plugin in discovered {
        let manifest = match &plugin.manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                println!("{}: FAILED: {error}", plugin.name);
                failed.push(plugin.name);
                continue;
            }
        };
        if manifest.environment == EnvironmentKind::None {
            continue;
        }
        // The installer's last lines, shown when it fails.
        let mut output = std::collections::VecDeque::with_capacity(SHOWN_LINES);
        let result = environment::prepare(&plugin.folder, manifest.environment_timeout, |line| {
            if args.verbose {
                println!("  {line}");
            } else {
                if output.len() == SHOWN_LINES {
                    output.pop_front();
                }
                output.push_back(line);
            }
        })
        .await;
        match result {
            Ok(Prepared::UpToDate) => println!("{}: up to date", plugin.name),
            Ok(Prepared::Built(took)) => {
                println!("{}: built in {:.1} s", plugin.name, took.as_secs_f64());
            }
            Err(reason) => {
                for line in &output {
                    println!("  {line}");
                }
                println!("{}: FAILED: {reason}", plugin.name);
                failed.push(plugin.name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the environment of {} could not be built",
            failed.join(", ")
        )
    }
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let mut config = args.gateway.config(String::new())?;
    config.supervisor_urls = args.supervisor;
    let path = args
        .admin_token_file
        .unwrap_or_else(|| args.gateway.data_dir.join(ADMIN_TOKEN_FILE));
    config.supervisor_token =
        admin_token::from_environment_or(&path, false).with_context(|| {
            format!(
                "failed to read the supervisor's admin token from {} (give the supervisor's \
             --admin-token-file, or set CORRAL_ADMIN_TOKEN)",
                path.display()
            )
        })?;
    let running = RunningGateway::start(&config)
        .await
        .context("failed to start the gateway")?;
    print_gateway_addresses(running.local_addr()?);
    let shutdown = Shutdown::default();
    tokio::spawn(forward_signals(shutdown.clone()));
    running
        .serve(
            shutdown.graceful,
            shutdown.immediate,
            args.gateway.shutdown_grace,
        )
        .await
        .context("gateway stopped with an error")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Every setting is checked before anything starts.
    let mut config = args.gateway.config(String::new())?;
    let token_file = args
        .supervisor
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.gateway.data_dir.join(ADMIN_TOKEN_FILE));
    let supervisor_config = args.supervisor.config(&args.gateway.data_dir)?;
    config.supervisor_token = supervisor_config.admin_token.clone();
    let supervisor = RunningSupervisor::start(&supervisor_config)
        .await
        .context("failed to start the supervisor")?;
    let grpc = supervisor.local_addr();
    config.supervisor_urls = vec![format!("http://{grpc}")];
    let gateway = RunningGateway::start(&config)
        .await
        .context("failed to start the gateway")?;
    announce("corral supervisor: gRPC listening on", &grpc.to_string());
    print_gateway_addresses(gateway.local_addr()?);
    if std::env::var_os(admin_token::TOKEN_VARIABLE).is_none() {
        // The operator's key to the admin routes, as Jupyter prints its own.
        announce(
            "corral: the admin token (for ctl and the dashboard's tasks) is in",
            &token_file.display().to_string(),
        );
    }
    // The gateway stops first (its tasks need their plugins), then the supervisor.
    let signals = Shutdown::default();
    tokio::spawn(forward_signals(signals.clone()));
    let supervisor_shutdown = Shutdown {
        graceful: CancellationToken::new(),
        immediate: signals.immediate.clone(),
    };
    let supervisor = tokio::spawn(supervisor.serve(supervisor_shutdown.clone()));
    let served = gateway
        .serve(
            signals.graceful.clone(),
            signals.immediate.clone(),
            args.gateway.shutdown_grace,
        )
        .await
        .context("gateway stopped with an error");
    supervisor_shutdown.graceful.cancel();
    let supervised = supervisor
        .await
        .context("supervisor task failed")?
        .context("supervisor stopped with an error");
    served.and(supervised)
}

async fn supervisor(args: SupervisorCommandArgs) -> anyhow::Result<()> {
    let config = args
        .supervisor
        .config(std::path::Path::new(DEFAULT_DATA_DIR))?;
    let running = RunningSupervisor::start(&config)
        .await
        .context("failed to start the supervisor")?;
    let bound = running.local_addr();
    announce("corral supervisor: gRPC listening on", &bound.to_string());
    let shutdown = Shutdown::default();
    if let Some(redis_url) = args.redis_url {
        let url = match args.advertise_url {
            Some(url) => url,
            None if bound.ip().is_unspecified() => anyhow::bail!(
                "--advertise-url is needed to announce a supervisor listening on every \
                 interface ({bound})"
            ),
            None => format!("http://{bound}"),
        };
        tracing::info!(%url, "announcing this plugin host in Redis");
        let stop = shutdown.graceful.clone();
        let token = config.admin_token.clone();
        tokio::spawn(async move {
            corral_gateway::presence::announce(&redis_url, &args.redis_prefix, &url, &token, stop)
                .await;
        });
    }
    tokio::spawn(forward_signals(shutdown.clone()));
    running
        .serve(shutdown)
        .await
        .context("supervisor stopped with an error")
}

/// Where to point a browser or a client (the tests read the first line).
fn print_gateway_addresses(address: SocketAddr) {
    announce(
        "corral gateway: HTTP listening on",
        &format!("http://{address}"),
    );
    announce(
        "corral gateway: dashboard on",
        &format!("http://{address}/dashboard/"),
    );
    announce(
        "corral gateway: API description on",
        &format!("http://{address}/api-docs/"),
    );
}

/// Whether log lines are JSON (set once, as logging starts).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says where something listens: a plain line on stdout (`<what> <where>`,
/// which scripts read), or with JSON logs a log record like every other,
/// its address in `url`.
fn announce(what: &str, url: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(url, "{what} {url}");
    } else {
        println!("{what} {url}");
    }
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
    // A third signal: leave now.
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    eprintln!("corral: stopped at once by a third signal");
    std::process::exit(130);
}

fn init_tracing(
    format: LogFormat,
    default_level: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Lossless: when the queue is full, the logging call waits rather than
    // dropping lines.
    // 8192 queued lines (the default, 128,000, costs about 5 MiB per process).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        )
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().init();
        }
    }
    guard
}

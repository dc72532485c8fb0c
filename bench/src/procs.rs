//! The system under test: `corral supervisor` and `corral gateway` as their own
//! processes (so each one's memory and CPU can be read), plugin folders, and
//! fresh PostgreSQL databases.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use corral_proto::admin::{AdminApi, AdminToken, admin_api};
use corral_proto::supervisor::v1::{
    ListPluginsRequest, PluginState, PluginStatus, WatchPluginsRequest,
};

/// How long a process may take to print its address or a plugin to get ready.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The folder of `corral`, the plugins and the examples of this build.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the benchmark's own binary")?;
    exe.parent()
        .map(Path::to_owned)
        .ok_or_else(|| anyhow!("the benchmark binary has no folder"))
}

/// A binary of this build; the error says how to build it.
pub fn built(relative: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(relative);
    if !path.is_file() {
        bail!(
            "{} is missing: build with `cargo build --release --workspace --bins --examples` \
             (scripts/bench does)",
            path.display()
        );
    }
    Ok(path)
}

/// The repository root (for the Python plugin).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// A temporary folder of plugin folders.
pub struct PluginFolders {
    root: tempfile::TempDir,
}

impl PluginFolders {
    pub fn new() -> Result<Self> {
        Ok(Self {
            root: tempfile::tempdir()?,
        })
    }

    pub fn add(&self, name: &str, manifest: &str) -> Result<&Self> {
        let folder = self.root.path().join(name);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("plugin.toml"), manifest)?;
        Ok(self)
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
}

/// Restart at once: lifecycle figures measure the supervisor, not its backoff.
const NO_BACKOFF: &str = "[restart]\nbackoff_initial = \"0s\"\nmax_restarts = 100000\n";

/// The manifest of a Rust plugin binary of this build.
pub fn binary_manifest(binary: &str, env: &[(&str, &str)]) -> Result<String> {
    let mut manifest = format!(
        "command = {:?}\n{NO_BACKOFF}",
        built(binary)?.display().to_string()
    );
    if !env.is_empty() {
        manifest.push_str("[env]\n");
        for (key, value) in env {
            manifest.push_str(&format!("{key} = {value:?}\n"));
        }
    }
    Ok(manifest)
}

/// The `versioned` example as plugin `name` at `version`.
pub fn versioned_manifest(name: &str, version: &str) -> Result<String> {
    binary_manifest(
        "examples/versioned",
        &[("PLUGIN_NAME", name), ("PLUGIN_VERSION", version)],
    )
}

/// The Python reference plugin, from its virtual environment.
pub fn python_manifest(plugin: &str) -> Result<String> {
    let folder = repo().join("plugins").join(plugin);
    let python = folder.join(".venv/bin/python");
    if !python.is_file() {
        bail!("the environment of {plugin} is missing: run `corral envs` (scripts/bench does)");
    }
    // The plugin is confined to the benchmark's folder: it may also read its
    // own folder in the repository and the SDK it has installed editable.
    let readable = [
        folder.clone(),
        repo().join("sdk-python/src"),
        repo().join("plugins/qiskit-simulator-common"),
    ]
    .map(|path| format!("{:?}", path.display().to_string()))
    .join(", ");
    Ok(format!(
        "command = {:?}\nargs = [\"plugin.py\"]\nworking_dir = {:?}\nallow_read = [{readable}]\n\
         [env]\nPYTHONUNBUFFERED = \"1\"\n{NO_BACKOFF}",
        python.display().to_string(),
        folder.display().to_string()
    ))
}

/// A `corral` process; killed (with its plugins' groups) when dropped.
pub struct Process {
    pub child: Child,
    pub address: String,
    _logs: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `corral` with `args` and waits for the line `prefix<address>`.
    fn start(args: &[String], prefix: &'static str) -> Result<Self> {
        let logs = tempfile::NamedTempFile::new()?;
        let mut child = Command::new(built("corral")?)
            .args(args)
            .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .stderr(logs.reopen()?)
            .spawn()
            .context("failed to start corral")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix(prefix) {
                    let _ = found.send(address.to_owned());
                }
            }
        });
        let address = address.recv_timeout(START_LIMIT).map_err(|_| {
            let logs = std::fs::read_to_string(logs.path()).unwrap_or_default();
            anyhow!("corral {} did not start:\n{logs}", args[0])
        })?;
        Ok(Self {
            child,
            address,
            _logs: logs,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> Result<u64> {
        proc_status_bytes(self.pid(), "VmRSS:")
    }

    /// Peak resident memory since the process started, in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        proc_status_bytes(self.pid(), "VmHWM:")
    }

    /// CPU time (user and system) used so far.
    pub fn cpu(&self) -> Result<Duration> {
        cpu_of(self.pid())
    }
}

/// CPU time (user and system) a process used so far.
pub fn cpu_of(pid: u32) -> Result<Duration> {
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> Result<u64> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))
        };
        let total = ticks(11)? + ticks(12)?;
        // USER_HZ: 100 on every Linux this runs on.
        Ok(Duration::from_millis(total * 10))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM: the supervisor stops its plugins; then make sure.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_bytes(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// The Admin API token of the processes the benchmarks start.
const ADMIN_TOKEN: &str = "bench-admin-token";

/// A running `corral supervisor`.
pub struct Supervisor {
    pub process: Process,
}

impl Supervisor {
    pub fn start(folders: &Path) -> Result<Self> {
        let args = [
            "supervisor".into(),
            "--grpc".into(),
            "127.0.0.1:0".into(),
            "--plugin-folders".into(),
            folders.display().to_string(),
        ];
        Ok(Self {
            process: Process::start(&args, "corral supervisor: gRPC listening on ")?,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.process.address)
    }

    pub async fn admin(&self) -> Result<AdminApi> {
        let channel = tonic::transport::Endpoint::from_shared(self.url())?
            .connect()
            .await?;
        Ok(admin_api(channel, AdminToken::new(ADMIN_TOKEN)?))
    }

    /// Waits until every one of `count` plugins is ready.
    pub async fn all_ready(&self, count: usize) -> Result<Vec<PluginStatus>> {
        let mut admin = self.admin().await?;
        let mut watch = admin
            .watch_plugins(WatchPluginsRequest {})
            .await?
            .into_inner();
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            let plugins = admin
                .list_plugins(ListPluginsRequest {})
                .await?
                .into_inner()
                .plugins;
            let ready = plugins
                .iter()
                .filter(|plugin| plugin.state == PluginState::Ready as i32)
                .count();
            if ready >= count {
                return Ok(plugins);
            }
            match tokio::time::timeout_at(deadline, watch.message()).await {
                Ok(Ok(Some(_))) => {}
                _ => bail!("only {ready} of {count} plugins got ready"),
            }
        }
    }
}

/// A running `corral gateway`.
pub struct Gateway {
    pub process: Process,
    pub addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway over `supervisor`'s `plugins` (ready) plugins and waits
    /// until it lists them; `database_url` `None` is the embedded SQLite.
    pub async fn start(
        supervisor: &Supervisor,
        plugins: usize,
        database_url: Option<&str>,
    ) -> Result<Self> {
        Self::start_over(&[supervisor], plugins, database_url, &[]).await
    }

    /// The same over several plugin hosts, with `extra` flags.
    pub async fn start_over(
        supervisors: &[&Supervisor],
        plugins: usize,
        database_url: Option<&str>,
        extra: &[String],
    ) -> Result<Self> {
        let data = tempfile::tempdir()?;
        let urls: Vec<String> = supervisors
            .iter()
            .map(|supervisor| supervisor.url())
            .collect();
        let mut args = vec![
            "gateway".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--supervisor".into(),
            urls.join(","),
            "--data-dir".into(),
            data.path().display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        if let Some(url) = database_url {
            args.extend(["--database-url".into(), url.to_owned()]);
        }
        let process = Process::start(&args, "corral gateway: HTTP listening on http://")?;
        let addr = process.address.parse()?;
        let gateway = Self {
            process,
            addr,
            _data: data,
        };
        gateway.listing(plugins).await?;
        Ok(gateway)
    }
}

impl Gateway {
    /// Waits until the gateway lists `count` plugins (it learns them from the
    /// supervisor's watch stream just after it starts).
    pub async fn listing(&self, count: usize) -> Result<()> {
        let mut conn = crate::http::Conn::open(self.addr).await?;
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            let reply = conn.get("/plugins/").await?;
            let listed = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|body| body["plugins"].as_array().map(Vec::len))
                .unwrap_or(0);
            if listed >= count {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the gateway listed {listed} of {count} plugins after {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A PostgreSQL database made for the benchmark; dropped with it.
pub struct Database {
    pub url: String,
    admin: String,
    name: String,
}

impl Database {
    pub async fn create(admin: &str) -> Result<Self> {
        use sqlx::Connection;
        let mut connection = sqlx::postgres::PgConnection::connect(admin)
            .await
            .with_context(|| {
                format!("PostgreSQL is needed at {admin}: start it with scripts/services")
            })?;
        let name = format!("corral_bench_{:016x}", rand::random::<u64>());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await?;
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        Ok(Self {
            url: format!("{base}/{name}"),
            admin: admin.to_owned(),
            name,
        })
    }

    /// Drops the database (after its users disconnected).
    pub async fn drop_now(self) -> Result<()> {
        use sqlx::Connection;
        let mut connection = sqlx::postgres::PgConnection::connect(&self.admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut connection)
        .await?;
        Ok(())
    }
}

//! Helpers for the end-to-end tests: start the real `corral` binary with real
//! plugin processes, talk to it over real gRPC, wait for events with deadlines.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use corral_proto::{
    admin::{AdminApi, AdminToken, admin_api},
    supervisor::v1::{PluginRef, PluginState, PluginStatus, WatchPluginsRequest},
};

pub mod cluster;
pub mod relay;
pub mod serve;

/// Runs an async test body `name(db)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Db::Postgres).await })*
        }
    };
}

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The Admin API token of every `corral` the tests start (CORRAL_ADMIN_TOKEN).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A client of the Admin API at `url` with the tests' admin token.
pub async fn admin_client(url: &str) -> AdminApi {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    admin_api(channel, AdminToken::new(ADMIN_TOKEN).unwrap())
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding `corral` and the plugin binaries built with it.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_corral"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A built binary beside `corral`; fails with how to build it.
pub fn built(relative: &str) -> PathBuf {
    let path = bin_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first with `cargo build --workspace --bins --examples` \
         (the README's test command does)",
        path.display()
    );
    path
}

/// The plugins most tests run (every Rust reference plugin and
/// csv-visualization), as a folder of links into `plugins/`, checked to be
/// runnable. The other Python plugins have tests of their own
/// (`tests/python_plugins.rs`).
pub fn reference_plugins() -> PathBuf {
    plugin_selection(
        "reference",
        &[
            "hello-world",
            "hello-world-multi-step",
            "file-upload",
            "json-visualization",
            "manual-classification",
            "csv-visualization",
        ],
    )
}

/// A plugins folder holding links to the repository's plugin folders `names`
/// (under the tests' temp dir, shared by every test that asks for it). Its name
/// holds a digest of the repository's path: clones sharing one build cache
/// never run each other's plugins.
pub fn plugin_selection(name: &str, names: &[&str]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    check_runnable();
    let mut digest = std::hash::DefaultHasher::new();
    repo().hash(&mut digest);
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("plugins-{name}-{:016x}", digest.finish()));
    std::fs::create_dir_all(&folder).unwrap();
    for plugin in names {
        let link = folder.join(plugin);
        if !link.exists() {
            match std::os::unix::fs::symlink(repo().join("plugins").join(plugin), &link) {
                Ok(()) => {}
                // Another test process made it meanwhile.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => panic!("link {}: {error}", link.display()),
            }
        }
    }
    python_environments(&folder);
    folder
}

fn check_runnable() {
    for plugin in [
        "corral-plugin-hello-world",
        "corral-plugin-hello-world-multi-step",
        "corral-plugin-file-upload",
        "corral-plugin-json-visualization",
        "corral-plugin-manual-classification",
    ] {
        built(plugin);
    }
}

/// Builds the Python plugins' environments (a no-op when they match their
/// locks), so no test's supervisor spends its start timeout on one.
pub fn python_environments(plugins: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["envs", "--plugin-folders"])
        .arg(plugins)
        .output()
        .expect("run corral envs");
    assert!(
        output.status.success(),
        "`corral envs` failed (uv must be on PATH: scripts/python-deps installs it \
         into .tools/bin):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A folder of plugin folders made for one test.
pub struct PluginFolders {
    pub root: tempfile::TempDir,
}

impl PluginFolders {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    /// Adds a plugin folder `name` with `manifest` as its plugin.toml.
    pub fn add(&self, name: &str, manifest: &str) -> &Self {
        let folder = self.root.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("plugin.toml"), manifest).unwrap();
        self
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
}

/// A manifest running the `rogue` example plugin (`rogue@v1-0-0`).
pub fn rogue_manifest() -> String {
    format!(
        "command = {:?}\n",
        built("examples/rogue").display().to_string()
    )
}

/// A manifest running the `versioned` example plugin as `name` at `version`.
pub fn versioned_manifest(name: &str, version: &str, extra: &str) -> String {
    format!(
        "command = {:?}\n{extra}\n[env]\nPLUGIN_NAME = {name:?}\nPLUGIN_VERSION = {version:?}\n",
        built("examples/versioned").display().to_string()
    )
}

/// A running `corral supervisor`, killed when dropped.
pub struct Supervisor {
    pub child: Child,
    pub address: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Supervisor {
    /// Starts `corral supervisor` on a free port with `folders`.
    pub fn start(folders: &[&Path]) -> Self {
        Self::start_with_env(folders, &[])
    }

    /// Starts `corral supervisor` with extra variables in its environment.
    pub fn start_with_env(folders: &[&Path], env: &[(&str, &str)]) -> Self {
        Self::start_with(folders, env, &[])
    }

    /// Starts `corral supervisor` with extra variables and flags.
    pub fn start_with(folders: &[&Path], env: &[(&str, &str)], flags: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", folders, env, flags)
    }

    /// Starts `corral supervisor` listening on `address` (e.g. again where a
    /// killed one listened, for the gateway that follows it).
    pub fn start_at(
        address: &str,
        folders: &[&Path],
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Self {
        let joined = std::env::join_paths(folders).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["supervisor", "--grpc", address, "--plugin-folders"])
            .arg(&joined)
            .args(flags)
            .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start corral");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (address_tx, address_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("corral supervisor: gRPC listening on ") {
                    let _ = address_tx.send(address.to_owned());
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let address = address_rx
            .recv_timeout(DEADLINE)
            .expect("corral supervisor did not print its address");
        Self {
            child,
            address,
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn admin(&self) -> AdminApi {
        admin_client(&self.url()).await
    }

    /// What the supervisor logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until `plugin`'s status satisfies `done`, following the watch
    /// stream; fails with the last status seen after [`DEADLINE`].
    pub async fn wait_for(
        &self,
        plugin: &str,
        what: &str,
        done: impl Fn(&PluginStatus) -> bool,
    ) -> PluginStatus {
        watch_until(&self.url(), plugin, what, done).await
    }

    /// Waits until `plugin` is ready and returns its status.
    pub async fn ready(&self, plugin: &str) -> PluginStatus {
        self.wait_for(plugin, "ready", |status| {
            status.state == PluginState::Ready as i32
        })
        .await
    }

    /// Follows `plugin`'s output until a line satisfies `done`; returns every line
    /// read, in order.
    pub async fn log_lines_until(&self, plugin: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut logs = self
            .admin()
            .await
            .follow_logs(corral_proto::supervisor::v1::FollowLogsRequest {
                plugin: plugin.into(),
                tail: u32::MAX,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut lines = Vec::new();
        loop {
            let line = tokio::time::timeout(DEADLINE, logs.message())
                .await
                .unwrap_or_else(|_| panic!("no matching log line of {plugin}; got {lines:#?}"))
                .unwrap()
                .expect("logs stream ended");
            let matched = done(&line.text);
            lines.push(line.text);
            if matched {
                return lines;
            }
        }
    }

    pub async fn status(&self, plugin: &str) -> PluginStatus {
        self.admin()
            .await
            .get_plugin(PluginRef {
                plugin: plugin.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Sends SIGTERM and waits for the exit, keeping this runtime's connections
    /// to it serviced meanwhile.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "corral did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Supervisor {
    /// SIGKILL: the plugins die with it (parent-death signal). Tests of a graceful
    /// stop call [`Supervisor::terminate`].
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows the watch stream of the supervisor at `url` until `plugin`'s status
/// satisfies `done`; fails with the last status seen after [`DEADLINE`].
pub async fn watch_until(
    url: &str,
    plugin: &str,
    what: &str,
    done: impl Fn(&PluginStatus) -> bool,
) -> PluginStatus {
    let mut admin = admin_client(url).await;
    let mut stream = admin
        .watch_plugins(WatchPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(status))) if status.plugin == plugin => {
                if done(&status) {
                    return status;
                }
                last = Some(status);
            }
            Ok(Ok(Some(_))) => {}
            Ok(other) => {
                panic!("watch stream ended while waiting for {plugin} {what}: {other:?}")
            }
            Err(_) => panic!("{plugin} not {what} within {DEADLINE:?}; last status: {last:#?}"),
        }
    }
}

/// A loopback HTTP server whose `GET /gate` answers once per permit given, so
/// a plugin that reads it goes on when the test says. A request whose client
/// goes away before its answer is counted as abandoned.
pub struct Gate {
    pub url: String,
    permits: Arc<tokio::sync::Semaphore>,
    arrivals: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    departures: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

/// A request waiting at the gate; dropped unanswered, it says so.
struct Waiting(Option<tokio::sync::mpsc::UnboundedSender<()>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(leave) = self.0.take() {
            let _ = leave.send(());
        }
    }
}

impl Gate {
    pub async fn start() -> Self {
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let (arrive, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let (leave, departures) = tokio::sync::mpsc::unbounded_channel();
        let held = permits.clone();
        let app = axum::Router::new().route(
            "/gate",
            axum::routing::get(move || {
                let (held, arrive, leave) = (held.clone(), arrive.clone(), leave.clone());
                async move {
                    let _ = arrive.send(());
                    let mut waiting = Waiting(Some(leave));
                    held.acquire().await.unwrap().forget();
                    waiting.0 = None;
                    "go"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/gate", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            permits,
            arrivals: tokio::sync::Mutex::new(arrivals),
            departures: tokio::sync::Mutex::new(departures),
        }
    }

    /// Waits until a request waiting at the gate is abandoned by its client
    /// (a plugin whose call was cancelled stops reading).
    pub async fn abandoned(&self) {
        tokio::time::timeout(DEADLINE, self.departures.lock().await.recv())
            .await
            .expect("no request left the gate unanswered")
            .unwrap();
    }

    /// Lets `times` requests through.
    pub fn open(&self, times: usize) {
        self.permits.add_permits(times);
    }

    /// Waits until a request arrives (a plugin waits at the gate).
    pub async fn arrived(&self) {
        tokio::time::timeout(DEADLINE, self.arrivals.lock().await.recv())
            .await
            .expect("nothing came to the gate")
            .unwrap();
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// An HS256 token with `roles`, valid for ten minutes.
pub fn token(secret: &str, roles: &[&str]) -> String {
    token_with(secret, serde_json::json!({"roles": roles}))
}

/// An HS256 token with `claims` (an object), valid for ten minutes.
pub fn token_with(secret: &str, mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    claims["exp"] = serde_json::json!(exp);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Waits (servicing the caller's runtime) for `child` to exit.
pub async fn exited(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Signals every process of the group led by `pid`.
pub fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is the state, fields[2] the process group.
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

/// Polls `condition` until it holds or [`DEADLINE`] passes (for facts that have
/// no event, such as a process disappearing after its parent died).
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "not true within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

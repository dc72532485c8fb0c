//! Running `corral serve` (or `supervisor` + `gateway`) against a real database:
//! SQLite in a temporary folder, or a fresh PostgreSQL database per test.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::Value;

use super::DEADLINE;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases in.
fn postgres_admin_url() -> String {
    std::env::var("CORRAL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The id at the end of a task URL (`…/tasks/<id>/`).
pub fn task_id(task_url: &str) -> String {
    task_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// A database of one test; dropped with it.
pub struct TestDatabase {
    pub url: Option<String>,
    name: Option<String>,
    pub data_dir: tempfile::TempDir,
}

impl TestDatabase {
    /// Writes `secret` to a file in the data directory, for `--jwt-secret-file`.
    pub fn secret_file(&self, secret: &str) -> String {
        let path = self.data_dir.path().join("jwt-secret");
        std::fs::write(&path, secret).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// A connection of the test's own to its database.
    pub async fn connect(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = self.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.path().join("corral.db").display()
            )
        });
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }

    /// The count a `SELECT COUNT(*) AS n …` of the test's database answers.
    pub async fn count(&self, sql: &'static str) -> i64 {
        use sqlx::Row;
        let mut connection = self.connect().await;
        let row = sqlx::query(sql).fetch_one(&mut connection).await.unwrap();
        row.get::<i64, _>("n")
    }

    pub async fn new(db: Db) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        if db == Db::Sqlite {
            return Self {
                url: None,
                name: None,
                data_dir,
            };
        }
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut connection = sqlx::postgres::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "PostgreSQL is needed at {admin} ({error}): start it with `scripts/services`, \
                     or point CORRAL_TEST_POSTGRES at a server"
                )
            });
        let name = format!("corral_test_{}", random_suffix());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .unwrap();
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin);
        Self {
            url: Some(format!("{base}/{name}")),
            name: Some(name),
            data_dir,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        // Drop runs outside any runtime a test could still be polling.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut connection) =
                    sqlx::postgres::PgConnection::connect(&postgres_admin_url()).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut connection)
                        .await;
                }
            });
        })
        .join();
    }
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// A running `corral` process (serve, or gateway alone) with an HTTP API.
pub struct Corral {
    pub child: Child,
    pub http: String,
    pub grpc: Option<String>,
    pub client: reqwest::Client,
}

/// `corral serve` on free ports with `data_dir` and `plugin_folders`; the
/// database is the embedded default unless the caller adds one.
pub fn serve_command(data_dir: &Path, plugin_folders: &[&Path]) -> Command {
    serve_command_of(
        Path::new(env!("CARGO_BIN_EXE_corral")),
        data_dir,
        plugin_folders,
    )
}

/// The same with another `corral` binary (e.g. a copy).
pub fn serve_command_of(binary: &Path, data_dir: &Path, plugin_folders: &[&Path]) -> Command {
    let mut command = Command::new(binary);
    command
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--plugin-folders")
        .arg(std::env::join_paths(plugin_folders).unwrap())
        .env("CORRAL_ADMIN_TOKEN", super::ADMIN_TOKEN);
    command
}

impl Corral {
    /// `corral serve` with `plugin_folders` on `database`.
    pub fn serve(database: &TestDatabase, plugin_folders: &[&Path]) -> Self {
        Self::serve_with(database, plugin_folders, &[])
    }

    /// `corral serve` with extra flags.
    pub fn serve_with(database: &TestDatabase, plugin_folders: &[&Path], extra: &[&str]) -> Self {
        let mut command = serve_command(database.data_dir.path(), plugin_folders);
        command.args(extra);
        if let Some(url) = &database.url {
            command.args(["--database-url", url]);
        }
        Self::start(command)
    }

    /// GETs `url` (absolute or a path) and returns the body as text.
    pub async fn get_text(&self, url: &str) -> String {
        self.client
            .get(self.url(url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `corral gateway` against a running supervisor.
    pub fn gateway(database: &TestDatabase, supervisor_url: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .args([
                "gateway",
                "--http",
                "127.0.0.1:0",
                "--supervisor",
                supervisor_url,
                "--data-dir",
            ])
            .arg(database.data_dir.path())
            .env("CORRAL_ADMIN_TOKEN", super::ADMIN_TOKEN);
        if let Some(url) = &database.url {
            command.args(["--database-url", url]);
        }
        Self::start(command)
    }

    /// Runs a prepared `corral` command that prints the gateway's address.
    pub fn start_command(command: Command) -> Self {
        Self::start(command)
    }

    fn start(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info,corral_gateway=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("failed to start corral");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let (mut http, mut grpc) = (None, None);
        let deadline = Instant::now() + DEADLINE;
        while http.is_none() {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("corral did not print its addresses");
            if let Some(address) = line.strip_prefix("corral gateway: HTTP listening on ") {
                http = Some(address.to_owned());
            }
            if let Some(address) = line.strip_prefix("corral supervisor: gRPC listening on ") {
                grpc = Some(address.to_owned());
            }
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            child,
            http: http.unwrap(),
            grpc,
            client,
        }
    }

    /// An absolute URL for `path`; an absolute URL is returned as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            return path.to_owned();
        }
        format!("{}{path}", self.http)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `GET /plugins/` lists `identifiers` (the gateway learns them
    /// from the supervisor's stream; there is no HTTP event for it).
    pub async fn wait_for_plugins(&self, identifiers: &[&str]) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get_json("/plugins/").await;
            let listed: Vec<&str> = body["plugins"]
                .as_array()
                .map(|plugins| {
                    plugins
                        .iter()
                        .filter_map(|p| p["identifier"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            if identifiers.iter().all(|id| listed.contains(id)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugins {identifiers:?} not listed; got {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// POSTs a urlencoded form; returns the status and the Location header.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, Option<String>, Value) {
        let response = self
            .client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|value| value.to_str().unwrap().to_owned());
        (
            status,
            location,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Submits hello-world style input to a plugin and returns the task URL.
    pub async fn submit(&self, plugin: &str, form: &[(&str, &str)]) -> String {
        let (status, location, body) = self
            .post_form(&format!("/plugins/{plugin}/process/"), form)
            .await;
        assert_eq!(status, 303, "{body}");
        location.unwrap()
    }

    /// Follows a task's event stream until `until` matches an event.
    pub async fn events_until(
        &self,
        task_url: &str,
        until: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        events_until(&self.client, task_url, until).await
    }

    /// Waits (through the event stream) until the task asks for a step.
    pub async fn wait_for_step(&self, task_url: &str) {
        self.events_until(task_url, |name, data| {
            name == "step" || (name == "snapshot" && data.get("steps").is_some())
        })
        .await;
    }

    /// Waits for the task to end (through its event stream) and returns its status.
    pub async fn finished(&self, task_url: &str) -> Value {
        self.events_until(task_url, |name, data| {
            name == "status" || (name == "snapshot" && data["status"] != "PENDING")
        })
        .await;
        self.client
            .get(task_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Corral {
    /// Sends SIGTERM and waits (servicing this runtime) for the exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        super::signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        self.exited().await
    }

    /// Waits (servicing this runtime) for the process to exit.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        super::exited(&mut self.child).await
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the repository's reference plugins are.
pub fn plugins() -> PathBuf {
    super::reference_plugins()
}

/// Follows a task's event stream until `until` matches an event (name, data);
/// returns every event read, the snapshot first.
pub async fn events_until(
    client: &reqwest::Client,
    task_url: &str,
    until: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let events = stream_events(client, task_url, None, |event| {
        until(&event.name, &event.data)
    })
    .await
    .expect("the event stream answered 204");
    events
        .into_iter()
        .map(|event| (event.name, event.data))
        .collect()
}

/// One Server-Sent Event of a task's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub id: Option<u64>,
    pub name: String,
    pub data: Value,
}

/// Follows a task's event stream (resuming after `last_event_id` if given)
/// until `until` matches an event; `None` when the gateway answers 204 (the
/// client has every event).
pub async fn stream_events(
    client: &reqwest::Client,
    task_url: &str,
    last_event_id: Option<u64>,
    until: impl Fn(&StreamEvent) -> bool,
) -> Option<Vec<StreamEvent>> {
    let response = open_stream(client, task_url, last_event_id).await?;
    Some(read_events(response, until).await)
}

/// Opens a task's event stream: once this returns, the gateway follows the
/// task for this client. `None` when it answers 204.
pub async fn open_stream(
    client: &reqwest::Client,
    task_url: &str,
    last_event_id: Option<u64>,
) -> Option<reqwest::Response> {
    let mut request = client.get(format!("{task_url}events"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    if response.status().as_u16() == 204 {
        return None;
    }
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Some(response)
}

/// Reads an open event stream until `until` matches an event.
pub async fn read_events(
    response: reqwest::Response,
    until: impl Fn(&StreamEvent) -> bool,
) -> Vec<StreamEvent> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = StreamEvent {
                id: None,
                name: String::from("message"),
                data: Value::Null,
            };
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event.name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                } else if let Some(value) = line.strip_prefix("id:") {
                    event.id = Some(value.trim().parse().unwrap());
                }
            }
            if data.is_empty() {
                continue;
            }
            event.data = serde_json::from_str(&data).unwrap();
            let done = until(&event);
            events.push(event);
            if done {
                return events;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("event not seen in time; got {events:#?}"));
        match chunk {
            Some(chunk) => buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            None => panic!("event stream ended; got {events:#?}"),
        }
    }
}

//! `corral ctl`: operate a running Corral. Plugins over the supervisor's admin
//! gRPC API; tasks over the gateway's REST API.

use std::{io::Write, time::Duration};

/// Prints a line to stdout; a reader that went away (`| head`) ends the command
/// quietly, as it ends any other command-line tool.
macro_rules! say {
    ($($arg:tt)*) => { write_line(format_args!($($arg)*)) };
}

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use corral_proto::{
    admin::{AdminApi, AdminToken, admin_api},
    supervisor::v1::{
        DrainRequest, FollowLogsRequest, ListPluginsRequest, PluginRef, PluginStatus,
    },
};
use futures::StreamExt;
use serde_json::{Value, json};

/// Where the servers are and how to talk to them.
#[derive(Debug, clap::Args)]
pub(crate) struct CtlArgs {
    /// The supervisor's gRPC URL.
    #[arg(
        long,
        env = "CORRAL_SUPERVISOR",
        default_value = "http://127.0.0.1:5006"
    )]
    supervisor: String,
    /// The gateway's URL.
    #[arg(long, env = "CORRAL_GATEWAY", default_value = "http://127.0.0.1:5005")]
    gateway: String,
    /// Bearer token for the gateway's admin routes (`tasks`, `cancel`,
    /// `retry`); without it, the admin token (below) is sent.
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the supervisor's admin token (default: admin-token in
    /// CORRAL_DATA_DIR, else in ./instance); CORRAL_ADMIN_TOKEN gives the
    /// token itself.
    #[arg(long, env = "CORRAL_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Every plugin (or the one named: folder or identifier): identifier,
    /// state, pid, restarts, uptime, last exit.
    Plugins {
        /// Only this plugin.
        name: Option<String>,
    },
    /// Start a stopped or failed plugin (its manifest is read again).
    Start { plugin: String },
    /// Stop a plugin: SIGTERM, its grace period, SIGKILL.
    Stop { plugin: String },
    /// Restart a plugin.
    Restart { plugin: String },
    /// A plugin's captured stdout and stderr, each line with its time (UTC).
    Logs {
        plugin: String,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many past lines to show.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
    },
    /// Tasks, newest first (admin role).
    Tasks {
        /// Only this plugin's (its identifier, `hello-world@v0-2-1`).
        #[arg(long)]
        plugin: Option<String>,
        /// Only these: PENDING, RUNNING, WAITING (for a step), SUCCESS, FAILURE.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after: Unix milliseconds or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Created before: Unix milliseconds or RFC 3339.
        #[arg(long)]
        until: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where the previous page ended (printed under it).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One task (its id, or its URL as the API hands it out): status, steps,
    /// outputs and log, and with the admin role its inputs, attempts, host and
    /// gateway; `--follow` streams its events until it ends.
    Task {
        /// The task's id or URL.
        task: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel an unfinished task: it ends FAILURE "cancelled by …" and its
    /// plugin's call is cancelled (admin role).
    Cancel {
        /// The task's id or URL.
        task: String,
    },
    /// Run an ended task again: a new task with the same plugin and inputs,
    /// linked to it (admin role).
    Retry {
        /// The task's id or URL.
        task: String,
    },
    /// Drain the supervisor's host: gateways send it no new task, its running
    /// tasks finish (`--undo` takes tasks again).
    Drain {
        #[arg(long)]
        undo: bool,
    },
    /// Every plugin host and gateway the gateway knows: hosts with their
    /// state and calls in flight, gateways with their lease and running tasks.
    Cluster,
}

pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    match &args.command {
        CtlCommand::Plugins { name } => {
            let mut plugins = admin(&args)
                .await?
                .list_plugins(ListPluginsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .plugins;
            if let Some(name) = name {
                plugins.retain(|plugin| plugin.plugin == *name || plugin.identifier == *name);
                if plugins.is_empty() {
                    bail!("no plugin {name}: `corral ctl plugins` lists them");
                }
            }
            let mut tasks = unfinished_tasks(&args).await;
            if name.is_some()
                && let Some(tasks) = &mut tasks
            {
                // Only the named plugin's counts (not those of identifiers no
                // plugin serves).
                tasks.retain(|task| {
                    plugins
                        .iter()
                        .any(|plugin| task["plugin"] == *plugin.identifier)
                });
            }
            if args.json {
                let plugins: Vec<Value> = plugins
                    .iter()
                    .map(|status| {
                        let mut plugin = plugin_json(status);
                        if let Some(tasks) = &tasks {
                            let (waiting, running) = task_counts(tasks, &status.identifier);
                            plugin["waitingTasks"] = json!(waiting);
                            plugin["runningTasks"] = json!(running);
                        }
                        plugin
                    })
                    .collect();
                print_json(&json!(plugins))
            } else {
                print_plugins(&plugins, tasks.as_deref())
            }
        }
        CtlCommand::Start { plugin }
        | CtlCommand::Stop { plugin }
        | CtlCommand::Restart { plugin } => {
            let mut client = admin(&args).await?;
            let reference = PluginRef {
                plugin: plugin.clone(),
            };
            let status = match &args.command {
                CtlCommand::Start { .. } => client.start_plugin(reference).await,
                CtlCommand::Stop { .. } => client.stop_plugin(reference).await,
                _ => client.restart_plugin(reference).await,
            }
            .map_err(status_error)?
            .into_inner();
            if args.json {
                print_json(&plugin_json(&status))
            } else {
                print_plugins(std::slice::from_ref(&status), None)
            }
        }
        CtlCommand::Logs {
            plugin,
            follow,
            lines,
        } => {
            let mut stream = admin(&args)
                .await?
                .follow_logs(FollowLogsRequest {
                    plugin: plugin.clone(),
                    tail: *lines,
                    follow: *follow,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(line) = stream.message().await.map_err(status_error)? {
                let written = if args.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"plugin": line.plugin, "stream": line.stream, "pid": line.pid,
                               "timestampMs": line.timestamp_ms, "text": line.text})
                    )
                } else {
                    let time = std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(line.timestamp_ms).unwrap_or(0));
                    let time = humantime::format_rfc3339_millis(time);
                    writeln!(out, "{time} [{} {}] {}", line.pid, line.stream, line.text)
                };
                // A closed pipe (`| head`) ends the command quietly.
                if written.and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }
        CtlCommand::Tasks {
            plugin,
            status,
            since,
            until,
            limit,
            cursor,
        } => {
            let limit = limit.to_string();
            let query: Vec<(&str, &str)> = [
                ("plugin", plugin.as_deref()),
                ("status", status.as_deref()),
                ("since", since.as_deref()),
                ("until", until.as_deref()),
                ("limit", Some(limit.as_str())),
                ("cursor", cursor.as_deref()),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
            let url = format!(
                "{}/admin/tasks/?{}",
                args.gateway.trim_end_matches('/'),
                serde_urlencoded::to_string(query).context("a filter cannot be sent")?
            );
            let body = get_json(&args, &url).await?;
            if args.json {
                return print_json(&body);
            }
            let mut rows = vec![
                ["TASK", "PLUGIN", "STATUS", "PHASE", "ATTEMPTS", "CREATED"]
                    .map(String::from)
                    .to_vec(),
            ];
            for task in body["tasks"].as_array().into_iter().flatten() {
                rows.push(vec![
                    text(&task["id"]),
                    text(&task["plugin"]),
                    text(&task["status"]),
                    dash(&text(&task["phase"])),
                    task["attempts"].to_string(),
                    age(task["createdAt"].as_i64()),
                ]);
            }
            print_table(&rows)?;
            if let Some(next) = body["next"].as_str()
                && let Some((_, cursor)) = next.rsplit_once("cursor=")
            {
                say!("more: --cursor {cursor}");
            }
            Ok(())
        }
        CtlCommand::Cancel { task } => {
            let url = admin_task_url(&args, task)?;
            let body = send_json(&args, reqwest::Method::POST, &format!("{url}cancel/")).await?;
            if args.json {
                return print_json(&body);
            }
            say!("{}: {}", text(&body["id"]), text(&body["status"]));
            if let Some(reason) = text(&body["log"]).lines().last() {
                say!("{reason}");
            }
            Ok(())
        }
        CtlCommand::Retry { task } => {
            let url = admin_task_url(&args, task)?;
            let body = send_json(&args, reqwest::Method::POST, &format!("{url}retry/")).await?;
            if args.json {
                return print_json(&body);
            }
            say!(
                "{} retries {}: {}",
                text(&body["id"]),
                text(&body["retryOf"]),
                text(&body["href"])
            );
            Ok(())
        }
        CtlCommand::Drain { undo } => {
            let answer = admin(&args)
                .await?
                .drain(DrainRequest { draining: !undo })
                .await
                .map_err(status_error)?
                .into_inner();
            if args.json {
                return print_json(
                    &json!({"draining": answer.draining, "inFlight": answer.in_flight}),
                );
            }
            let state = if answer.draining {
                "draining: no new task"
            } else {
                "taking tasks"
            };
            say!(
                "{}: {state}; {} calls running through it",
                args.supervisor,
                answer.in_flight
            );
            Ok(())
        }
        CtlCommand::Cluster => {
            let url = format!("{}/admin/plugins/", args.gateway.trim_end_matches('/'));
            let body = get_json(&args, &url).await?;
            if args.json {
                return print_json(&json!({"hosts": body["hosts"], "gateways": body["gateways"]}));
            }
            let mut hosts = vec![
                ["HOST", "STATE", "READY", "IN FLIGHT"]
                    .map(String::from)
                    .to_vec(),
            ];
            for host in body["hosts"].as_array().into_iter().flatten() {
                let state = match (host["connected"] == true, host["draining"] == true) {
                    (false, _) => "unreachable",
                    (true, true) => "draining",
                    (true, false) => "up",
                };
                hosts.push(vec![
                    text(&host["url"]),
                    state.into(),
                    host["ready"].to_string(),
                    host["inFlight"].to_string(),
                ]);
            }
            print_table(&hosts)?;
            say!("");
            let mut gateways = vec![
                ["GATEWAY", "URL", "LEASE", "RUNNING", "STARTED"]
                    .map(String::from)
                    .to_vec(),
            ];
            for gateway in body["gateways"].as_array().into_iter().flatten() {
                let lease = if gateway["live"] == 1 {
                    "live"
                } else {
                    "expired"
                };
                gateways.push(vec![
                    text(&gateway["id"]),
                    text(&gateway["url"]),
                    lease.into(),
                    gateway["running"].to_string(),
                    age(gateway["startedAt"].as_i64()),
                ]);
            }
            print_table(&gateways)
        }
        CtlCommand::Task { task, follow } => {
            let task_url = task_url(&args, task)?;
            if *follow {
                return follow_task(&args, &task_url).await;
            }
            // With the admin role the operator's detail, else the public view.
            let admin_url = admin_task_url(&args, task)?;
            let detail = send_json(&args, reqwest::Method::GET, &admin_url)
                .await
                .ok();
            let body = match detail {
                Some(detail) => detail,
                None => get_json(&args, &task_url).await?,
            };
            if args.json {
                return print_json(&body);
            }
            say!("status: {}", text(&body["status"]));
            if body.get("attempts").is_some() {
                say!("plugin: {}", text(&body["plugin"]));
                say!("phase: {}", dash(&text(&body["phase"])));
                say!("attempts: {}", body["attempts"]);
                say!("created: {}", time_of(body["createdAt"].as_i64()));
                if let Some(finished) = body["finishedAt"].as_i64() {
                    say!("finished: {}", time_of(Some(finished)));
                }
                say!("host: {}", dash(&text(&body["host"])));
                say!("gateway: {}", dash(&text(&body["owner"]["url"])));
                if let Some(retry_of) = body["retryOf"].as_str() {
                    say!("retry of: {retry_of}");
                }
                for retry in body["retries"].as_array().into_iter().flatten() {
                    say!("retried as: {}", text(retry));
                }
                for (name, value) in body["inputs"].as_object().into_iter().flatten() {
                    say!("input: {name} = {}", text(value));
                }
            }
            if let Some(progress) = body.get("progress") {
                say!(
                    "progress: {} of {} {}",
                    progress["value"],
                    progress["target"],
                    text(&progress["unit"])
                );
            }
            for step in body["steps"].as_array().into_iter().flatten() {
                let state = if step["cleared"] == true {
                    "done"
                } else if body["status"] == "PENDING" {
                    "waiting"
                } else {
                    "never submitted"
                };
                say!(
                    "step: {} ({state}) {}",
                    text(&step["stepId"]),
                    text(&step["uiHref"])
                );
            }
            for output in body["outputs"].as_array().into_iter().flatten() {
                say!(
                    "output: {} {}",
                    text(&output["name"]),
                    text(&output["href"])
                );
            }
            let log = text(&body["log"]);
            if !log.is_empty() {
                say!("log:\n{log}");
            }
            Ok(())
        }
    }
}

/// Where the admin token is read from.
fn admin_token_path(args: &CtlArgs) -> std::path::PathBuf {
    args.admin_token_file.clone().unwrap_or_else(|| {
        std::env::var_os("CORRAL_DATA_DIR")
            .map_or_else(|| "./instance".into(), std::path::PathBuf::from)
            .join("admin-token")
    })
}

async fn admin(args: &CtlArgs) -> anyhow::Result<AdminApi> {
    let path = admin_token_path(args);
    let token =
        corral_supervisor::admin_token::from_environment_or(&path, false).map_err(|error| {
            anyhow!(
                "cannot read the admin token from {}: {error} (give --admin-token-file, \
                 or set CORRAL_ADMIN_TOKEN)",
                path.display()
            )
        })?;
    let token = AdminToken::new(&token).map_err(|error| anyhow!("{error}"))?;
    let endpoint = tonic::transport::Endpoint::from_shared(args.supervisor.clone())
        .with_context(|| format!("invalid supervisor URL `{}`", args.supervisor))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|error| {
        anyhow!(
            "cannot reach the supervisor at {}: {}",
            args.supervisor,
            root_cause(&error)
        )
    })?;
    Ok(admin_api(channel, token))
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow!("{}", status.message())
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("failed to set up the HTTP client")
}

/// The task's id from its id or from any URL of it the API hands out
/// (`…/tasks/<id>/`, its events, its admin detail).
fn task_id(task: &str) -> anyhow::Result<String> {
    let id = match task.split_once("/tasks/") {
        Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or_default(),
        None => task.trim(),
    };
    let is_id = id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !is_id {
        bail!("`{task}` is neither a task id nor a task's URL");
    }
    Ok(id.to_ascii_lowercase())
}

/// The task's URL on `--gateway`. A URL given only names the task: the
/// tokens go to `--gateway` alone, never to a host a pasted URL names (behind
/// a proxy the URLs the API hands out name the proxy anyway).
fn task_url(args: &CtlArgs, task: &str) -> anyhow::Result<String> {
    let id = task_id(task)?;
    Ok(format!(
        "{}/tasks/{id}/",
        args.gateway.trim_end_matches('/')
    ))
}

/// The task's admin URL (`…/admin/tasks/<id>/`).
fn admin_task_url(args: &CtlArgs, task: &str) -> anyhow::Result<String> {
    let url = task_url(args, task)?;
    let (base, rest) = url.rsplit_once("/tasks/").unwrap_or((&url, ""));
    Ok(format!("{base}/admin/tasks/{rest}"))
}

/// The bearer token for the gateway: `--token`, else the admin token when it
/// can be read (the operator of a local `corral serve` needs nothing more).
fn bearer(args: &CtlArgs) -> Option<String> {
    if let Some(token) = &args.token {
        return Some(token.clone());
    }
    corral_supervisor::admin_token::from_environment_or(&admin_token_path(args), false).ok()
}

/// GETs `url` from the gateway with the token; a refusal or an error status is
/// one readable error.
async fn gateway_get(args: &CtlArgs, url: &str) -> anyhow::Result<reqwest::Response> {
    gateway_request(args, reqwest::Method::GET, url).await
}

/// Sends `method` to `url` and reads the JSON answer.
async fn send_json(args: &CtlArgs, method: reqwest::Method, url: &str) -> anyhow::Result<Value> {
    gateway_request(args, method, url)
        .await?
        .json()
        .await
        .context("the gateway answered something that is not JSON")
}

/// A request to the gateway with the token; a refusal or an error status is
/// one readable error.
async fn gateway_request(
    args: &CtlArgs,
    method: reqwest::Method,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let mut request = http_client()?.request(method, url);
    if let Some(token) = bearer(args) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| {
        anyhow!(
            "cannot reach the gateway at {}: {}",
            args.gateway,
            root_cause(&error)
        )
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| status.to_string());
    if status.as_u16() == 401 || status.as_u16() == 403 {
        bail!(
            "the gateway refused the request ({}): {message}",
            status.as_u16()
        );
    }
    bail!("{message}")
}

async fn get_json(args: &CtlArgs, url: &str) -> anyhow::Result<Value> {
    let response = gateway_get(args, url).await?;
    response
        .json()
        .await
        .context("the gateway answered something that is not JSON")
}

/// Streams a task's events (SSE) until it ends.
async fn follow_task(args: &CtlArgs, task_url: &str) -> anyhow::Result<()> {
    let response = gateway_get(args, &format!("{task_url}events")).await?;
    let mut body = response.bytes_stream();
    // Bytes until a whole event is in: a character may be split across chunks.
    let mut buffer: Vec<u8> = Vec::new();
    let mut final_status = None;
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.context("the event stream broke")?);
        while let Some((end, separator)) = event_end(&buffer) {
            let block = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + separator);
            let (mut name, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            if args.json {
                say!("{}", json!({"event": name, "data": data}));
            } else {
                match name.as_str() {
                    // What the task did before we followed it, then its status.
                    "snapshot" => {
                        for line in text(&data["log"]).lines() {
                            say!("log: {line}");
                        }
                        for output in data["outputs"].as_array().into_iter().flatten() {
                            say!(
                                "output: {} {}",
                                text(&output["name"]),
                                text(&output["href"])
                            );
                        }
                        for step in data["steps"].as_array().into_iter().flatten() {
                            if step["cleared"] == false {
                                say!(
                                    "step: {} waits for input at {}",
                                    text(&step["stepId"]),
                                    text(&step["uiHref"])
                                );
                            }
                        }
                        say!("status: {}", text(&data["status"]));
                    }
                    "log" => say!("log: {}", text(&data["text"])),
                    "progress" => say!(
                        "progress: {} of {} {}",
                        data["value"],
                        data["target"],
                        text(&data["unit"])
                    ),
                    "step" => say!(
                        "step: {} waits for input at {}",
                        text(&data["stepId"]),
                        text(&data["uiHref"])
                    ),
                    "output" => say!("output: {} {}", text(&data["name"]), text(&data["href"])),
                    // A finished task's snapshot said it already.
                    "status" if final_status.is_none() => {
                        say!("status: {}", text(&data["status"]))
                    }
                    _ => {}
                }
            }
            if name == "status" || (name == "snapshot" && data["status"] != "PENDING") {
                final_status = data["status"].as_str().map(str::to_owned);
            }
        }
    }
    if final_status.is_none() {
        // The stream broke (a proxy's idle timeout, a restart): ask once.
        let body = get_json(args, task_url).await?;
        let status = text(&body["status"]);
        if status != "PENDING" {
            say!("status: {status}");
            final_status = Some(status);
        }
    }
    match final_status.as_deref() {
        Some("SUCCESS") => Ok(()),
        Some(status) => bail!("the task ended {status}"),
        None => bail!("the event stream ended before the task did"),
    }
}

/// Where the first event of `buffer` ends, and the length of its separator (a
/// blank line, LF or CRLF).
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|window| window == b"\n\n");
    let crlf = buffer.windows(4).position(|window| window == b"\r\n\r\n");
    match (lf, crlf) {
        (Some(lf), Some(crlf)) if crlf < lf => Some((crlf, 4)),
        (Some(lf), _) => Some((lf, 2)),
        (None, Some(crlf)) => Some((crlf, 4)),
        (None, None) => None,
    }
}

fn plugin_json(status: &PluginStatus) -> Value {
    json!({
        "plugin": status.plugin,
        "identifier": status.identifier,
        "state": corral_gateway::directory::state_name(status.state),
        "pid": status.pid,
        "endpoint": status.endpoint,
        "restarts": status.restarts,
        "uptimeMs": status.uptime_ms,
        "lastExitReason": status.last_exit_reason,
        "error": status.error,
    })
}

/// The gateway's unfinished tasks by plugin identifier (`unfinishedTasks` of
/// `GET /admin/plugins/`); `None`, with a line on stderr, when it cannot say.
async fn unfinished_tasks(args: &CtlArgs) -> Option<Vec<Value>> {
    let url = format!("{}/admin/plugins/", args.gateway.trim_end_matches('/'));
    match get_json(args, &url).await {
        Ok(body) => Some(
            body["unfinishedTasks"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ),
        Err(error) => {
            eprintln!("corral: no task counts: {error}");
            None
        }
    }
}

/// Tasks of `identifier` waiting for a step, and running.
fn task_counts(tasks: &[Value], identifier: &str) -> (i64, i64) {
    tasks
        .iter()
        .find(|tasks| tasks["plugin"] == identifier)
        .map_or((0, 0), |tasks| {
            (
                tasks["waiting"].as_i64().unwrap_or(0),
                tasks["running"].as_i64().unwrap_or(0),
            )
        })
}

/// The plugins as a table; with `tasks`, how many tasks of each identifier
/// wait for a step and run (an old version can go when both are 0).
fn print_plugins(plugins: &[PluginStatus], tasks: Option<&[Value]>) -> anyhow::Result<()> {
    let mut header = vec![
        "PLUGIN",
        "IDENTIFIER",
        "STATE",
        "PID",
        "RESTARTS",
        "UPTIME",
        "LAST EXIT",
    ];
    if tasks.is_some() {
        header.extend(["WAITING", "RUNNING"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for plugin in plugins {
        let last_exit = if plugin.error.is_empty() {
            plugin.last_exit_reason.clone()
        } else {
            plugin.error.clone()
        };
        rows.push(vec![
            plugin.plugin.clone(),
            dash(&plugin.identifier),
            corral_gateway::directory::state_name(plugin.state),
            if plugin.pid == 0 {
                "-".into()
            } else {
                plugin.pid.to_string()
            },
            plugin.restarts.to_string(),
            if plugin.uptime_ms == 0 {
                "-".into()
            } else {
                humantime::format_duration(Duration::from_secs(plugin.uptime_ms / 1000)).to_string()
            },
            dash(&last_exit),
        ]);
        if let (Some(tasks), Some(row)) = (tasks, rows.last_mut()) {
            let (waiting, running) = task_counts(tasks, &plugin.identifier);
            row.extend([waiting.to_string(), running.to_string()]);
        }
    }
    if let Some(tasks) = tasks {
        // Identifiers no plugin serves any more, with tasks still unfinished.
        for gone in tasks.iter().filter(|tasks| {
            let identifier = tasks["plugin"].as_str().unwrap_or("");
            !plugins.iter().any(|plugin| plugin.identifier == identifier)
        }) {
            let identifier = gone["plugin"].as_str().unwrap_or("-").to_owned();
            let (waiting, running) = task_counts(tasks, &identifier);
            rows.push(vec![
                "-".into(),
                identifier,
                "gone".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                waiting.to_string(),
                running.to_string(),
            ]);
        }
    }
    print_table(&rows)
}

fn write_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(error) = written {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("corral: failed to write the output: {error}");
        std::process::exit(1);
    }
}

fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        say!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_default()
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_owned()
    }
}

fn age(millis: Option<i64>) -> String {
    let Some(millis) = millis else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or_default();
    let seconds = u64::try_from((now - millis) / 1000).unwrap_or(0);
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(seconds))
    )
}

/// Unix milliseconds as an RFC 3339 time (UTC, to the second).
fn time_of(millis: Option<i64>) -> String {
    let Some(millis) = millis.and_then(|millis| u64::try_from(millis).ok()) else {
        return "-".into();
    };
    let time = std::time::UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_seconds(time).to_string()
}

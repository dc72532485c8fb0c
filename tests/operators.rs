//! For the people who run Corral: tasks they list, look into, cancel and
//! retry (REST and `corral ctl`), metrics a Prometheus server and `promtool`
//! take, JSON logs `jq` takes, shell completions, the manual page and
//! `corral health`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    ADMIN_TOKEN, DEADLINE, Gate, PluginFolders,
    serve::{Corral, Db, TestDatabase, plugins, task_id},
    versioned_manifest,
};
use serde_json::{Value, json};

const ALPHA: &str = "alpha@v1-0-0";
const BETA: &str = "beta@v1-0-0";
const HELLO: &str = "hello-world@v0-2-1";
const SECRET: &str = "operators-test-secret-long-enough";

/// Two plugins of the echo fixture: `alpha` and `beta`.
fn two_plugins() -> PluginFolders {
    let folders = PluginFolders::new();
    folders.add("alpha", &versioned_manifest("alpha", "v1.0.0", ""));
    folders.add("beta", &versioned_manifest("beta", "v1.0.0", ""));
    folders
}

/// `method` on `path` with a bearer token (`None`: without one).
async fn call(
    corral: &Corral,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = corral.client.request(method, corral.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn admin_get(corral: &Corral, path: &str) -> Value {
    let (status, body) = call(corral, reqwest::Method::GET, path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn ids(list: &Value) -> Vec<String> {
    list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the task waits for its step.
async fn waiting(corral: &Corral, task_url: &str) {
    corral
        .events_until(task_url, |name, data| {
            name == "step"
                || (name == "snapshot" && data["steps"].as_array().is_some_and(|s| !s.is_empty()))
        })
        .await;
}

/// `corral ctl` against `corral`, the admin token in its environment.
fn ctl(corral: &Corral, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["ctl", "--gateway", &corral.http])
        .args([
            "--supervisor",
            &format!("http://{}", corral.grpc.as_ref().unwrap()),
        ])
        .args(args)
        .env_remove("CORRAL_TOKEN")
        .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

fn ctl_ok(corral: &Corral, args: &[&str]) -> String {
    let output = ctl(corral, args);
    assert!(
        output.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_by_plugin_status_and_time_a_page_at_a_time_and_shown_whole() {
    let folders = two_plugins();
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&[ALPHA, BETA]).await;
    let mut done = Vec::new();
    for text in ["one", "two", "three"] {
        let url = corral.submit(ALPHA, &[("text", text)]).await;
        assert_eq!(corral.finished(&url).await["status"], "SUCCESS");
        done.push(task_id(&url));
    }
    let waiting_url = corral.submit(BETA, &[("step", "true")]).await;
    waiting(&corral, &waiting_url).await;
    let waits = task_id(&waiting_url);

    // Everyone's tasks are for operators only.
    let (status, body) = call(&corral, reqwest::Method::GET, "/admin/tasks/", None).await;
    assert_eq!(status, 401, "{body}");
    let all = admin_get(&corral, "/admin/tasks/").await;
    let newest_first: Vec<String> = [waits.clone()]
        .into_iter()
        .chain(done.iter().rev().cloned())
        .collect();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["next"], Value::Null);

    let alpha = admin_get(&corral, &format!("/admin/tasks/?plugin={ALPHA}")).await;
    assert_eq!(ids(&alpha), newest_first[1..]);
    let waiting_ones = admin_get(&corral, "/admin/tasks/?status=WAITING").await;
    assert_eq!(ids(&waiting_ones), std::slice::from_ref(&waits));
    assert_eq!(waiting_ones["tasks"][0]["phase"], "waiting");
    let running = admin_get(&corral, "/admin/tasks/?status=RUNNING").await;
    assert_eq!(ids(&running), Vec::<String>::new());
    let none = admin_get(
        &corral,
        &format!("/admin/tasks/?plugin={BETA}&status=SUCCESS"),
    )
    .await;
    assert_eq!(ids(&none), Vec::<String>::new());

    // Time: since the newest (inclusive), until it (exclusive); RFC 3339 too.
    let newest_at = all["tasks"][0]["createdAt"].as_i64().unwrap();
    let since = admin_get(&corral, &format!("/admin/tasks/?since={newest_at}")).await;
    assert_eq!(ids(&since), std::slice::from_ref(&waits));
    let until = admin_get(&corral, &format!("/admin/tasks/?until={newest_at}")).await;
    assert_eq!(ids(&until), newest_first[1..]);
    let future = admin_get(&corral, "/admin/tasks/?since=2999-01-01T00:00:00Z").await;
    assert_eq!(ids(&future), Vec::<String>::new());

    // Pages: every task once, in order, then no next page.
    let mut paged = Vec::new();
    let mut next = Some("/admin/tasks/?limit=3".to_owned());
    while let Some(page) = next {
        let body = admin_get(&corral, &page).await;
        assert!(ids(&body).len() <= 3, "{body}");
        paged.extend(ids(&body));
        next = body["next"].as_str().map(str::to_owned);
    }
    assert_eq!(paged, newest_first);

    let (status, bad) = call(
        &corral,
        reqwest::Method::GET,
        "/admin/tasks/?status=DONE&limit=0&cursor=nonsense",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    let fields: Vec<&String> = bad["errors"]["query"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["cursor", "limit", "status"], "{bad}");

    // The detail: inputs, attempts, the host it ran on, the gateway.
    let detail = admin_get(&corral, &format!("/admin/tasks/{}/", done[1])).await;
    assert_eq!(detail["status"], "SUCCESS");
    assert_eq!(detail["plugin"], ALPHA);
    assert_eq!(detail["inputs"]["text"], "two");
    assert_eq!(detail["attempts"], 1);
    assert_eq!(
        detail["host"],
        format!("http://{}", corral.grpc.as_ref().unwrap())
    );
    assert_eq!(detail["owner"]["url"], corral.http, "{detail}");
    assert_eq!(detail["log"], "v1.0.0 says: two");
    assert!(detail["finishedAt"].as_i64().unwrap() >= detail["createdAt"].as_i64().unwrap());
    let waiting_detail = admin_get(&corral, &format!("/admin/tasks/{waits}/")).await;
    assert_eq!(waiting_detail["phase"], "waiting");
    assert_eq!(
        waiting_detail["owner"],
        Value::Null,
        "a waiting task belongs to no gateway"
    );
    assert_eq!(waiting_detail["steps"][0]["cleared"], false);
    let (status, _) = call(
        &corral,
        reqwest::Method::GET,
        "/admin/tasks/00000000000000000000000000000000/",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);

    // ctl: the list with a filter, and a task by the URL the API handed out.
    let listed = ctl_ok(&corral, &["tasks", "--status", "waiting"]);
    let rows: Vec<&str> = listed.lines().collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows[0].starts_with("TASK"), "{listed}");
    assert!(
        rows[1].starts_with(&waits) && rows[1].contains("waiting"),
        "{listed}"
    );
    let paged = ctl_ok(&corral, &["tasks", "--limit", "1"]);
    assert!(
        paged.lines().last().unwrap().starts_with("more: --cursor "),
        "{paged}"
    );
    let task_url = corral.url(&format!("/tasks/{}/", done[0]));
    let shown = ctl_ok(&corral, &["task", &task_url]);
    assert!(shown.starts_with("status: SUCCESS\n"), "{shown}");
    assert!(shown.contains("\ninput: text = one\n"), "{shown}");
    assert!(
        shown.contains(&format!(
            "\nhost: http://{}\n",
            corral.grpc.as_ref().unwrap()
        )),
        "{shown}"
    );
    assert!(shown.ends_with("log:\nv1.0.0 says: one\n"), "{shown}");
    let by_id = ctl_ok(&corral, &["task", &done[0]]);
    assert_eq!(by_id, shown);
    let events_url = format!("{task_url}events");
    assert_eq!(ctl_ok(&corral, &["task", &events_url]), shown);
    let refused = ctl(&corral, &["task", "http://127.0.0.1:1/plugins/"]);
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "corral: `http://127.0.0.1:1/plugins/` is neither a task id nor a task's URL\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_ends_with_who_cancelled_it_and_its_running_call_is_told() {
    let folders = two_plugins();
    let database = TestDatabase::new(Db::Postgres).await;
    let corral = Corral::serve_with(
        &database,
        &[folders.path()],
        &["--jwt-secret-file", &database.secret_file(SECRET)],
    );
    corral.wait_for_plugins(&[ALPHA, BETA]).await;
    let alice = common::token_with(SECRET, json!({"sub": "alice", "roles": ["admin"]}));

    // A running task: its plugin waits at the gate.
    let gate = Gate::start().await;
    let running_url = corral
        .submit(ALPHA, &[("gate", &gate.url), ("text", "never")])
        .await;
    gate.arrived().await;
    let cancel = format!("/admin/tasks/{}/cancel/", task_id(&running_url));
    let user = common::token(SECRET, &["user"]);
    let (status, _) = call(&corral, reqwest::Method::POST, &cancel, Some(&user)).await;
    assert_eq!(status, 403, "only the admin role cancels");
    let (status, ended) = call(&corral, reqwest::Method::POST, &cancel, Some(&alice)).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["status"], "FAILURE");
    assert_eq!(ended["log"], "cancelled by alice");
    // The plugin's call was cancelled: it stopped reading the gate.
    gate.abandoned().await;
    let status = corral.finished(&running_url).await;
    assert_eq!(status["status"], "FAILURE");
    assert_eq!(status["log"], "cancelled by alice");
    let (status, again) = call(&corral, reqwest::Method::POST, &cancel, Some(&alice)).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["message"], "This task has ended.");

    // A waiting task ends at once; its step can no longer be submitted.
    let waiting_url = corral.submit(BETA, &[("step", "true")]).await;
    waiting(&corral, &waiting_url).await;
    let cancelled = ctl_ok(&corral, &["cancel", &waiting_url]);
    assert_eq!(
        cancelled,
        format!(
            "{}: FAILURE\ncancelled by the operator (admin token)\n",
            task_id(&waiting_url)
        )
    );
    let status = corral.finished(&waiting_url).await;
    assert_eq!(status["status"], "FAILURE");
    let step = status["steps"][0]["href"].as_str().unwrap();
    let (code, _, body) = corral.post_form(step, &[("answer", "too late")]).await;
    assert_eq!(code, 409, "{body}");
    let row = database
        .count(
            "SELECT COUNT(*) AS n FROM tasks WHERE status = 'FAILURE' AND finished_at IS NOT NULL",
        )
        .await;
    assert_eq!(row, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_new_task_with_the_same_inputs_linked_to_the_ended_one() {
    let folders = two_plugins();
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&[ALPHA, BETA]).await;
    let first_url = corral.submit(ALPHA, &[("text", "again")]).await;
    corral.finished(&first_url).await;
    let first = task_id(&first_url);

    let retry = format!("/admin/tasks/{first}/retry/");
    let response = corral
        .client
        .post(corral.url(&retry))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["retryOf"], first);
    assert_eq!(created["href"], location);
    let second = corral.finished(&location).await;
    assert_eq!(second["status"], "SUCCESS");
    assert_eq!(second["log"], "v1.0.0 says: again");
    let second_id = task_id(&location);
    let detail = admin_get(&corral, &format!("/admin/tasks/{second_id}/")).await;
    assert_eq!(detail["retryOf"], first);
    let old = admin_get(&corral, &format!("/admin/tasks/{first}/")).await;
    assert_eq!(detail["inputs"]["text"], "again");
    assert_eq!(detail["inputs"], old["inputs"]);
    // With ctl, by the task's URL; the old task lists both retries.
    let printed = ctl_ok(&corral, &["retry", &first_url]);
    let third_id = printed.split_whitespace().next().unwrap().to_owned();
    assert!(
        printed.starts_with(&format!("{third_id} retries {first}: http://")),
        "{printed}"
    );
    let old = admin_get(&corral, &format!("/admin/tasks/{first}/")).await;
    assert_eq!(old["retries"], json!([second_id, third_id]));

    // Only an ended task is retried.
    let waiting_url = corral.submit(BETA, &[("step", "true")]).await;
    waiting(&corral, &waiting_url).await;
    let path = format!("/admin/tasks/{}/retry/", task_id(&waiting_url));
    let (status, body) = call(&corral, reqwest::Method::POST, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409, "{body}");
}

/// One sample of the Prometheus text format: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format 0.0.4 (no escapes in our label values).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once("=\"").unwrap();
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .collect()
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed: apt-get install prometheus (scripts/test-deps does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_task_series_join_plugin_series_by_label() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral
        .wait_for_plugins(&[HELLO, "hello-world-multi-step@v0-2-1"])
        .await;
    let task_url = corral.submit(HELLO, &[("inputStr", "measured")]).await;
    corral.finished(&task_url).await;
    let waits = corral
        .submit("hello-world-multi-step@v0-2-1", &[("inputStr", "wait")])
        .await;
    waiting(&corral, &waits).await;

    let response = corral
        .client
        .get(corral.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    promtool(&text).unwrap_or_else(|complaints| panic!("promtool: {complaints}\n{text}"));
    let metrics = samples(&text);

    // The join a dashboard makes: tasks by plugin, with the state of the
    // plugin serving them, on (identifier, plugin_folder).
    let ready = find(&metrics, "corral_plugin_state", &[("state", "ready")]);
    let joined: Vec<(&str, &str, f64, f64)> = find(&metrics, "corral_tasks_total", &[])
        .into_iter()
        .filter_map(|task| {
            let plugin = ready.iter().find(|plugin| {
                plugin.labels["identifier"] == task.labels["identifier"]
                    && plugin.labels["plugin_folder"] == task.labels["plugin_folder"]
            })?;
            Some((
                task.labels["identifier"].as_str(),
                task.labels["plugin_folder"].as_str(),
                task.value,
                plugin.value,
            ))
        })
        .collect();
    assert_eq!(joined, [(HELLO, "hello-world", 1.0, 1.0)], "{text}");

    // A plugin's state is a full set: one series per state, one of them 1.
    let states = find(
        &metrics,
        "corral_plugin_state",
        &[("plugin_folder", "hello-world")],
    );
    assert_eq!(states.len(), 6, "{states:?}");
    let current: Vec<&str> = states
        .iter()
        .filter(|sample| sample.value == 1.0)
        .map(|sample| sample.labels["state"].as_str())
        .collect();
    assert_eq!(current, ["ready"]);
    let restarts = find(
        &metrics,
        "corral_plugin_restarts_total",
        &[("identifier", HELLO)],
    );
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0].labels["plugin_folder"], "hello-world");
    // The waiting task is not running.
    let multi = [("identifier", "hello-world-multi-step@v0-2-1")];
    let unfinished: HashMap<&str, f64> = find(&metrics, "corral_tasks_unfinished", &multi)
        .into_iter()
        .map(|sample| (sample.labels["phase"].as_str(), sample.value))
        .collect();
    assert_eq!(
        unfinished,
        HashMap::from([("waiting", 1.0), ("running", 0.0)])
    );
    assert_eq!(find(&metrics, "corral_calls_running", &[])[0].value, 0.0);
    // Requests by route template, never by path.
    let posts = find(
        &metrics,
        "corral_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/plugins/{plugin}/process/"),
            ("status", "303"),
        ],
    );
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].value, 2.0);
    assert!(metrics.iter().all(|sample| {
        !sample
            .labels
            .get("route")
            .is_some_and(|route| route.contains(&task_id(&task_url)))
    }));
    let build = find(&metrics, "corral_build_info", &[]);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(find(&metrics, "process_cpu_seconds_total", &[])[0].value > 0.0);
    assert!(find(&metrics, "process_resident_memory_bytes", &[])[0].value > 1e6);

    // OpenMetrics when the scraper asks for it.
    let response = corral
        .client
        .get(corral.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let openmetrics = response.text().await.unwrap();
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# TYPE corral_tasks counter\n"));

    // Restarts are counted.
    let mut admin =
        common::admin_client(&format!("http://{}", corral.grpc.as_ref().unwrap())).await;
    admin
        .restart_plugin(corral_proto::supervisor::v1::PluginRef {
            plugin: "hello-world".into(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = corral.get_text("/metrics").await;
        let metrics = samples(&text);
        let restarts = find(
            &metrics,
            "corral_plugin_restarts_total",
            &[("plugin_folder", "hello-world")],
        );
        if restarts.first().is_some_and(|sample| sample.value == 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "restart not counted: {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// JSON that refuses an object with the same key twice (which most parsers
/// quietly read as its last value).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("JSON")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Strict, E> {
        Ok(Strict(json!(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Strict, E> {
        Ok(Strict(json!(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Strict, E> {
        Ok(Strict(json!(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Strict, E> {
        Ok(Strict(json!(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Strict, E> {
        Ok(Strict(json!(value)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        use serde::de::Error;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.insert(key.clone(), value).is_some() {
                return Err(A::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok(Strict(Value::Object(object)))
    }
}

fn strict(line: &str) -> Result<Value, String> {
    serde_json::from_str::<Strict>(line)
        .map(|Strict(value)| value)
        .map_err(|error| error.to_string())
}

#[test]
fn the_strict_reader_refuses_a_key_given_twice() {
    assert_eq!(
        strict(r#"{"a": {"b": [1, {"c": null}]}}"#).unwrap(),
        json!({"a": {"b": [1, {"c": null}]}})
    );
    let refused = strict(r#"{"span": {"name": "plugin", "name": "hello-world"}}"#).unwrap_err();
    assert!(refused.starts_with("duplicate key `name`"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_every_line_each_key_once_and_a_line_per_request() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = common::serve::serve_command(data_dir.path(), &[&plugins()])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let (sender, lines) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut records = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    // The address is a log record too.
    let http = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no listening record");
        let record = strict(&line).unwrap_or_else(|error| panic!("{error}: {line}"));
        let message = record["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let url = record["fields"]["url"].as_str().map(str::to_owned);
        records.push(record);
        if message.starts_with("corral gateway: HTTP listening on ") {
            break url.unwrap();
        }
    };
    let corral = Corral {
        child,
        http,
        grpc: None,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    corral.wait_for_plugins(&[HELLO]).await;
    let task_url = corral.submit(HELLO, &[("inputStr", "logged")]).await;
    corral.finished(&task_url).await;
    let mut corral = corral;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(corral.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(common::exited(&mut corral.child).await.success());
    records.extend(lines.iter().map(|line| {
        strict(&line).unwrap_or_else(|error| {
            panic!("not one JSON object with each key once ({error}): {line}")
        })
    }));
    assert_eq!(
        printed.join().unwrap(),
        "",
        "with JSON logs, stdout stays empty"
    );

    // One access line per request, its latency a number.
    let accessed: Vec<&Value> = records
        .iter()
        .filter(|record| record["target"] == "corral::access")
        .collect();
    let submitted = accessed
        .iter()
        .find(|record| record["fields"]["route"] == "/plugins/{plugin}/process/")
        .unwrap_or_else(|| panic!("no access line for the submission: {accessed:?}"));
    assert_eq!(submitted["level"], "INFO");
    assert_eq!(submitted["fields"]["method"], "POST");
    assert_eq!(submitted["fields"]["status"], 303);
    assert!(submitted["fields"]["latency_ms"].as_f64().unwrap() > 0.0);
    // A plugin's own lines name it in their span, once.
    let plugin_line = records
        .iter()
        .find(|record| {
            record["span"]["name"] == "plugin" && record["span"]["plugin"] == "hello-world"
        })
        .unwrap_or_else(|| panic!("no line of the hello-world plugin's span"));
    assert!(
        plugin_line["span"]["pid"].as_u64().is_some(),
        "{plugin_line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_the_manual_page_and_health_checks() {
    let corral_bin = env!("CARGO_BIN_EXE_corral");
    let generated = |args: &[&str]| {
        let output = Command::new(corral_bin).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = generated(&["completions", "bash"]);
    assert!(bash.contains("complete -F _corral"), "{bash}");
    // bash itself reads it.
    let checked = Command::new("bash")
        .args(["-n", "-c", &bash])
        .status()
        .unwrap();
    assert!(checked.success());
    assert!(generated(&["completions", "zsh"]).starts_with("#compdef corral"));
    let fish = generated(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c corral") && fish.contains("cancel"),
        "{fish}"
    );
    let refused = Command::new(corral_bin)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let man = generated(&["man"]);
    assert!(man.contains(".TH corral 1"), "{man}");
    assert!(man.contains("ctl"), "{man}");

    let database = TestDatabase::new(Db::Sqlite).await;
    let folders = two_plugins();
    let corral = Corral::serve(&database, &[folders.path()]);
    let health = |args: &[&str]| {
        Command::new(corral_bin)
            .arg("health")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(health(&["--url", &corral.url("/health")]).status.success());
    assert!(
        health(&[
            "--grpc",
            &format!("http://{}", corral.grpc.as_ref().unwrap())
        ])
        .status
        .success()
    );
    let missing = health(&["--url", &corral.url("/nothing-here/")]);
    assert!(!missing.status.success());
    let said = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("corral: http://") && said.contains("404"),
        "{said}"
    );
    let unreachable = health(&["--url", "http://127.0.0.1:1/health", "--timeout", "2s"]);
    assert!(!unreachable.status.success());
    assert_eq!(
        String::from_utf8(unreachable.stderr)
            .unwrap()
            .lines()
            .count(),
        1
    );
}

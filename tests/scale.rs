//! Several gateways on one PostgreSQL database and one Redis, and several
//! plugin hosts, on 127.0.0.x: any gateway serves any task, its events, steps
//! and files; a gateway that dies has its running tasks adopted by the others
//! within its lease; a host that dies has its retry-safe tasks run again on
//! another; a drained host gets no new task; Redis going away loses no event.
//! Each scenario prints accepted, ended, outcomes, lost (accepted − ended),
//! duplicated outputs and recovery times.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{
    Gate, PluginFolders,
    cluster::{ADOPTED_WITHIN, Cluster, RedisServer, on},
    relay::{Relay, through},
    serve::{Corral, StreamEvent, open_stream, read_events, task_id},
    versioned_manifest,
};
use serde_json::Value;

const SAFE: &str = "safe@v1-0-0";
const UNSAFE: &str = "unsafe@v1-0-0";
const BULK: &str = "bulk@v1-0-0";

fn folders() -> PluginFolders {
    let folders = PluginFolders::new();
    folders.add(
        "safe",
        &versioned_manifest("safe", "v1.0.0", "retry_safe = true"),
    );
    folders.add("unsafe", &versioned_manifest("unsafe", "v1.0.0", ""));
    folders.add(
        "bulk",
        &format!(
            "command = {:?}\n",
            common::built("examples/bulk").display().to_string()
        ),
    );
    folders
}

async fn cluster(gateways: usize) -> (Cluster, PluginFolders) {
    hosts_and_gateways(1, gateways).await
}

async fn hosts_and_gateways(hosts: usize, gateways: usize) -> (Cluster, PluginFolders) {
    let folders = folders();
    let cluster = Cluster::start_hosts(&[folders.path()], hosts, gateways).await;
    settle(&cluster).await;
    (cluster, folders)
}

/// Waits until every gateway has every plugin of every host ready.
async fn settle(cluster: &Cluster) {
    for gateway in &cluster.gateways {
        wait_for_ready(gateway, |ready| {
            ready["hosts"]
                .as_array()
                .is_some_and(|hosts| hosts.iter().all(|host| host["ready"] == 3))
        })
        .await;
    }
    cluster.wait_for_plugins(&[SAFE, UNSAFE, BULK]).await;
}

/// A task's events as one follower saw them, each with when it arrived.
async fn follow(gateway: &Corral, task_url: &str) -> reqwest::Response {
    open_stream(&gateway.client, &on(gateway, task_url), None)
        .await
        .expect("a stream")
}

async fn read_until_status(stream: reqwest::Response) -> Vec<(StreamEvent, Instant)> {
    let arrivals = Mutex::new(Vec::new());
    let events = read_events(stream, |event| {
        arrivals.lock().unwrap().push(Instant::now());
        event.name == "status"
    })
    .await;
    events
        .into_iter()
        .zip(arrivals.into_inner().unwrap())
        .collect()
}

async fn status_on(gateway: &Corral, task_url: &str) -> Value {
    gateway.finished(&on(gateway, task_url)).await
}

/// Any gateway follows, continues and serves any task: a follower on each of
/// three gateways sees the same events as the task's own gateway, within
/// milliseconds; folding them gives the final status; a step submitted on
/// another gateway continues there; a file written through one is served by
/// every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gateway_follows_continues_and_serves_any_task() {
    let (cluster, _folders) = cluster(3).await;
    let [a, b, c] = &cluster.gateways[..] else {
        panic!("three gateways")
    };

    // Events: the task runs on `a`, followed on all three.
    let gate = Gate::start().await;
    let task_url = a
        .submit(SAFE, &[("gate", &gate.url), ("text", "fanned out")])
        .await;
    gate.arrived().await;
    let streams = [
        follow(a, &task_url).await,
        follow(b, &task_url).await,
        follow(c, &task_url).await,
    ];
    gate.open(1);
    let seen = futures::future::join_all(streams.map(read_until_status)).await;
    let names = |events: &[(StreamEvent, Instant)]| -> Vec<(Option<u64>, String, Value)> {
        events
            .iter()
            .skip(1)
            .map(|(event, _)| (event.id, event.name.clone(), event.data.clone()))
            .collect()
    };
    assert_eq!(
        names(&seen[0]),
        names(&seen[1]),
        "a and b saw the same events"
    );
    assert_eq!(
        names(&seen[0]),
        names(&seen[2]),
        "a and c saw the same events"
    );
    let status = status_on(c, &task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    let mut folded = seen[1][0].0.data["log"].as_str().unwrap_or("").to_owned();
    for (event, _) in &seen[1][1..] {
        if event.name == "log" {
            if !folded.is_empty() {
                folded.push('\n');
            }
            folded.push_str(event.data["text"].as_str().unwrap());
        }
    }
    assert_eq!(
        folded,
        status["log"].as_str().unwrap(),
        "b's events fold into the status"
    );
    assert_eq!(seen[1].last().unwrap().0.data["status"], "SUCCESS");
    for (replica, events) in [("b", &seen[1]), ("c", &seen[2])] {
        let lag: Vec<f64> = events
            .iter()
            .zip(&seen[0])
            .skip(1)
            .map(|((_, there), (_, here))| {
                there.saturating_duration_since(*here).as_secs_f64() * 1e3
            })
            .collect();
        println!(
            "fan-out: replica {replica} saw each event {lag:.2?} ms after the owner's follower"
        );
    }

    // A step asked for on `a`, submitted on `b`, followed to its end on `c`.
    let task_url = a
        .submit(UNSAFE, &[("step", "true"), ("text", "stepped")])
        .await;
    b.wait_for_step(&on(b, &task_url)).await;
    let step = format!("/plugins/{UNSAFE}/{}/confirm-process/", task_id(&task_url));
    let (code, location, body) = b.post_form(&step, &[("answer", "from b")]).await;
    assert_eq!(code, 303, "{body}");
    assert!(location.unwrap().starts_with(&b.http));
    let status = status_on(c, &task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(status["log"], "confirmed: from b\nv1.0.0 says: stepped");

    // A file of 3 MiB written through `c`, read through `a` and `b`.
    let size = 3 * 1024 * 1024 + 7;
    let task_url = c.submit(BULK, &[("size", &size.to_string())]).await;
    let status = status_on(c, &task_url).await;
    let href = status["outputs"][0]["href"].as_str().unwrap().to_owned();
    for gateway in [a, b] {
        let bytes = gateway
            .client
            .get(on(gateway, &href))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len(), size);
        assert!(bytes.iter().all(|&byte| byte == b'x'));
    }
}

/// What a scenario saw of its tasks, printed as one line of the table.
#[derive(Default)]
struct Tally {
    accepted: usize,
    ended: usize,
    success: usize,
    failures: BTreeMap<String, usize>,
    duplicated: usize,
}

impl Tally {
    fn count(&mut self, status: &Value, outputs_expected: usize) {
        self.ended += 1;
        match status["status"].as_str() {
            Some("SUCCESS") => self.success += 1,
            _ => {
                let reason = status["log"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .last()
                    .unwrap_or("");
                *self.failures.entry(reason.to_owned()).or_default() += 1;
            }
        }
        let outputs = status["outputs"].as_array().map_or(0, Vec::len);
        self.duplicated += outputs.saturating_sub(outputs_expected);
    }

    fn print(&self, scenario: &str, recovery: Duration) {
        println!(
            "scenario {scenario}: accepted {}, ended {}, SUCCESS {}, FAILURE {:?}, lost {}, \
             duplicated {}, recovered in {:.2} s",
            self.accepted,
            self.ended,
            self.success,
            self.failures,
            self.accepted - self.ended,
            self.duplicated,
            recovery.as_secs_f64()
        );
    }
}

/// kill -9 of a gateway with tasks running: the others adopt them within its
/// lease; the retry-safe ones run again from their checkpoint and succeed
/// once, the others fail with the reason; the other gateways' own tasks are
/// untouched; a client that retries its submission elsewhere is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_load_loses_nothing() {
    let (mut cluster, _folders) = cluster(3).await;
    let gate = Gate::start().await;
    let mut tasks = Vec::new();
    for round in 0..6 {
        let text = format!("task {round}");
        for (gateway, plugin) in [(0, SAFE), (0, UNSAFE), (1, SAFE)] {
            let form = [("gate", gate.url.as_str()), ("text", &text), ("parts", "1")];
            let task_url = cluster.gateways[gateway].submit(plugin, &form).await;
            tasks.push((gateway, plugin, task_url));
        }
    }
    for _ in &tasks {
        gate.arrived().await;
    }
    let killed = unix_millis();
    cluster.gateways[0].child.kill().unwrap();
    cluster.gateways[0].child.wait().unwrap();
    // A client of the dead gateway submits again elsewhere.
    let refused = cluster.gateways[0]
        .client
        .post(cluster.gateways[0].url(&format!("/plugins/{SAFE}/process/")))
        .form(&[("text", "retried")])
        .send()
        .await;
    assert!(refused.is_err(), "the killed gateway still answers");
    let retried = cluster.gateways[2]
        .submit(SAFE, &[("text", "retried")])
        .await;
    gate.open(tasks.len() * 2);

    let survivor = &cluster.gateways[1];
    let mut tally = Tally {
        accepted: tasks.len(),
        ..Tally::default()
    };
    for (gateway, plugin, task_url) in &tasks {
        let status = status_on(survivor, task_url).await;
        tally.count(&status, 1);
        let log = status["log"].as_str().unwrap();
        match (*gateway, *plugin) {
            (0, SAFE) => {
                assert_eq!(status["status"], "SUCCESS", "{status}");
                assert!(
                    log.starts_with("re-running: the gateway running the task went away"),
                    "{log}"
                );
            }
            (0, _) => {
                assert_eq!(status["status"], "FAILURE", "{status}");
                assert!(
                    log.ends_with("the plugin's tasks are not safe to run again"),
                    "{log}"
                );
            }
            _ => {
                assert_eq!(status["status"], "SUCCESS", "{status}");
                assert!(!log.contains("re-running"), "{log}");
            }
        }
    }
    assert_eq!(status_on(survivor, &retried).await["status"], "SUCCESS");
    // The tasks not safe to run again ended as soon as they were adopted.
    let mut connection = cluster.database.connect().await;
    let last_adopted: i64 = sqlx::Row::get(
        &sqlx::query("SELECT MAX(finished_at) AS at FROM tasks WHERE plugin = $1")
            .bind(UNSAFE)
            .fetch_one(&mut connection)
            .await
            .unwrap(),
        "at",
    );
    let adopted_by = Duration::from_millis(u64::try_from(last_adopted - killed).unwrap());
    tally.print("gateway kill -9", adopted_by);
    assert_eq!((tally.ended, tally.duplicated), (tally.accepted, 0));
    assert!(adopted_by < ADOPTED_WITHIN, "adopted after {adopted_by:?}");
    // No expired lease owns a running task any more.
    let orphans = cluster
        .database
        .count(
            "SELECT COUNT(*) AS n FROM tasks t JOIN gateways g ON g.id = t.owner \
             WHERE t.status = 'PENDING' AND g.expires_at < (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
        )
        .await;
    assert_eq!(orphans, 0);
}

/// Redis killed with kill -9 while a task runs and followers wait on other
/// gateways: every stream still ends with the final status (read from the
/// database meanwhile); Redis started again, the fan-out resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_started_again_loses_no_event() {
    let (mut cluster, _folders) = cluster(2).await;
    let gate = Gate::start().await;
    let first_url = cluster.gateways[0]
        .submit(
            SAFE,
            &[("gate", &gate.url), ("text", "while Redis is away")],
        )
        .await;
    gate.arrived().await;
    let stream = follow(&cluster.gateways[1], &first_url).await;
    let killed = Instant::now();
    cluster.redis.kill();
    gate.open(1);
    let events = read_until_status(stream).await;
    let ended_after = killed.elapsed();
    let last = &events.last().unwrap().0;
    assert_eq!(last.data["status"], "SUCCESS");
    assert!(
        events
            .iter()
            .any(|(event, _)| event.data["text"] == "v1.0.0 says: while Redis is away"),
        "{events:?}"
    );
    let port = cluster.redis.port;
    cluster.redis = RedisServer::start_on(port);
    let restarted = Instant::now();
    for gateway in &cluster.gateways {
        wait_for_ready(gateway, |ready| ready["fanOut"] == "up").await;
    }
    let resumed = restarted.elapsed();
    let task_url = cluster.gateways[0]
        .submit(SAFE, &[("gate", &gate.url), ("text", "after")])
        .await;
    gate.arrived().await;
    let stream = follow(&cluster.gateways[1], &task_url).await;
    gate.open(1);
    let events = read_until_status(stream).await;
    assert_eq!(events.last().unwrap().0.data["status"], "SUCCESS");
    let mut tally = Tally {
        accepted: 2,
        ..Tally::default()
    };
    for task_url in [&first_url, &task_url] {
        tally.count(&status_on(&cluster.gateways[1], task_url).await, 0);
    }
    assert_eq!((tally.ended, tally.success), (2, 2));
    tally.print("Redis kill -9", resumed);
    println!(
        "Redis down: the follower elsewhere got the final status {:.2} s after the kill",
        ended_after.as_secs_f64()
    );
}

async fn wait_for_ready(gateway: &Corral, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let (_, body) = gateway.get_json("/ready").await;
        if until(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "not ready as expected: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A second gateway on the same SQLite database is refused with one clear line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_sqlite_is_refused() {
    let database = common::serve::TestDatabase::new(common::serve::Db::Sqlite).await;
    let folders = PluginFolders::new();
    let first = Corral::serve(&database, &[folders.path()]);
    let (_, ready) = first.get_json("/ready").await;
    assert!(!ready["lease"].as_str().unwrap().is_empty(), "{ready}");
    let other_dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        database.data_dir.path().join("corral.db").display()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "gateway",
            "--http",
            "127.0.0.1:0",
            "--supervisor",
            "http://127.0.0.1:9",
        ])
        .args(["--database-url", &url, "--data-dir"])
        .arg(other_dir.path())
        .env("CORRAL_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another gateway (http://127.0.0.1:")
            && stderr.contains("several gateways need PostgreSQL"),
        "{stderr}"
    );
}

fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// kill -9 of a plugin host (its supervisor, and with it its plugins) with
/// tasks running on both hosts: the retry-safe ones run again on the other
/// host and succeed once, the others fail with the reason, a task waiting for
/// a step continues on the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_load_loses_nothing() {
    let (mut cluster, _folders) = hosts_and_gateways(2, 2).await;
    let gate = Gate::start().await;
    let waiting = cluster.gateways[0]
        .submit(UNSAFE, &[("step", "true"), ("text", "waited")])
        .await;
    cluster.gateways[0].wait_for_step(&waiting).await;
    let tasks = gated_on_both(&cluster, &gate, 6).await;
    let mut on_killed = cluster.hosts[0].admin().await;
    let running_there = on_killed
        .drain(corral_proto::supervisor::v1::DrainRequest { draining: false })
        .await
        .unwrap()
        .into_inner()
        .in_flight;
    assert!(running_there > 0, "no task ran on the first host");
    let killed = Instant::now();
    cluster.hosts[0].child.kill().unwrap();
    cluster.hosts[0].child.wait().unwrap();
    gate.open(tasks.len() * 2);

    let gateway = &cluster.gateways[1];
    let mut tally = Tally {
        accepted: tasks.len() + 1,
        ..Tally::default()
    };
    let mut failed = 0;
    for (plugin, task_url) in &tasks {
        let status = status_on(gateway, task_url).await;
        tally.count(&status, 1);
        let log = status["log"].as_str().unwrap();
        if *plugin == SAFE {
            assert_eq!(status["status"], "SUCCESS", "{status}");
        } else if status["status"] == "FAILURE" {
            failed += 1;
            assert!(log.contains("stopped while running the task"), "{log}");
        }
    }
    let recovery = killed.elapsed();
    let step = format!("/plugins/{UNSAFE}/{}/confirm-process/", task_id(&waiting));
    let (code, _, body) = gateway.post_form(&step, &[("answer", "later")]).await;
    assert_eq!(code, 303, "{body}");
    let status = status_on(gateway, &waiting).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    tally.count(&status, 0);
    tally.print("host kill -9", recovery);
    assert_eq!((tally.ended, tally.duplicated), (tally.accepted, 0));
    assert_eq!(
        u32::try_from(failed).unwrap() + tally.success as u32,
        u32::try_from(tasks.len()).unwrap() + 1
    );
}

/// `rounds` tasks of each plugin, submitted to the first two gateways in
/// turn, each waiting at the gate once this returns.
async fn gated_on_both(
    cluster: &Cluster,
    gate: &Gate,
    rounds: usize,
) -> Vec<(&'static str, String)> {
    let mut tasks = Vec::new();
    for round in 0..rounds {
        let text = format!("task {round}");
        for plugin in [SAFE, UNSAFE] {
            let form = [("gate", gate.url.as_str()), ("text", &text), ("parts", "1")];
            let gateway = &cluster.gateways[round % 2];
            tasks.push((plugin, gateway.submit(plugin, &form).await));
        }
    }
    for _ in &tasks {
        gate.arrived().await;
    }
    tasks
}

/// A drained host gets no new task; the task it was running finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_host_gets_no_new_task_and_finishes_its_own() {
    let (cluster, _folders) = hosts_and_gateways(2, 1).await;
    let gateway = &cluster.gateways[0];
    let gate = Gate::start().await;
    let form = [("gate", gate.url.as_str()), ("text", "drain")];
    let submit = || gateway.submit(SAFE, &form);
    let mut tasks = vec![submit().await];
    gate.arrived().await;
    tasks.push(submit().await);
    gate.arrived().await;
    let in_flight = |host: usize| {
        let supervisor = &cluster.hosts[host];
        async move {
            supervisor
                .admin()
                .await
                .drain(corral_proto::supervisor::v1::DrainRequest {
                    draining: host == 0,
                })
                .await
                .unwrap()
                .into_inner()
                .in_flight
        }
    };
    // The least busy host first: one task on each.
    assert_eq!((in_flight(0).await, in_flight(1).await), (1, 1));
    wait_for_ready(gateway, |ready| ready["hosts"][0]["draining"] == true).await;
    for _ in 0..3 {
        tasks.push(submit().await);
        gate.arrived().await;
    }
    assert_eq!((in_flight(0).await, in_flight(1).await), (1, 4));
    gate.open(tasks.len());
    for task_url in &tasks {
        assert_eq!(status_on(gateway, task_url).await["status"], "SUCCESS");
    }
}

/// PostgreSQL away for ten seconds under two gateways with tasks running:
/// requests are answered 503 within two seconds (no hang, no 500), the
/// gateways come back by themselves, and every acknowledged task ends (the
/// retry-safe ones succeed once, after their adoption).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_for_ten_seconds_loses_nothing() {
    let (mut cluster, _folders) = hosts_and_gateways(1, 0).await;
    let upstream = "127.0.0.1:5432".parse().unwrap();
    let relay = Relay::start(upstream).await;
    cluster.database_url = through(&cluster.database_url, relay.address);
    cluster.add_gateway(&[]);
    cluster.add_gateway(&[]);
    settle(&cluster).await;
    let gate = Gate::start().await;
    let tasks = gated_on_both(&cluster, &gate, 4).await;
    relay.cut();
    let cut = Instant::now();
    let gateway = &cluster.gateways[1];
    let started = Instant::now();
    let (code, _, body) = gateway
        .post_form(&format!("/plugins/{SAFE}/process/"), &[("text", "during")])
        .await;
    let refused_in = started.elapsed();
    assert_eq!(code, 503, "{body}");
    let started = Instant::now();
    let (code, _) = gateway.get_json(&on(gateway, &tasks[0].1)).await;
    let read_refused_in = started.elapsed();
    assert_eq!(code, 503);
    println!(
        "PostgreSQL away: a submission answered 503 in {refused_in:.2?}, a read in {read_refused_in:.2?}"
    );
    assert!(refused_in < Duration::from_secs(2) && read_refused_in < Duration::from_secs(2));
    // The outage lasts its ten seconds.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
    relay.restore();
    let restored = Instant::now();
    for gateway in &cluster.gateways {
        wait_for_ready(gateway, |ready| ready["status"] == "ready").await;
    }
    let recovery = restored.elapsed();
    gate.open(tasks.len() * 4);
    let mut tally = Tally {
        accepted: tasks.len(),
        ..Tally::default()
    };
    for (plugin, task_url) in &tasks {
        let status = status_on(gateway, task_url).await;
        tally.count(&status, 1);
        if *plugin == SAFE {
            assert_eq!(status["status"], "SUCCESS", "{status}");
        }
    }
    tally.print("PostgreSQL away 10 s", recovery);
    assert_eq!((tally.ended, tally.duplicated), (tally.accepted, 0));
}

/// Notices of tasks run by three gateways are delivered once each: a
/// subscriber's notices are claimed by one gateway at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notices_from_three_gateways_arrive_once_each() {
    let (cluster, _folders) = cluster(3).await;
    let received: std::sync::Arc<Mutex<Vec<(String, String)>>> = std::sync::Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((
                        query.get("source").cloned().unwrap_or_default(),
                        query.get("event").cloned().unwrap_or_default(),
                    ));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gate = Gate::start().await;
    let mut tasks = Vec::new();
    for (index, gateway) in cluster.gateways.iter().enumerate() {
        for round in 0..3 {
            let text = format!("notice {index}.{round}");
            let task_url = gateway
                .submit(SAFE, &[("gate", &gate.url), ("text", &text)])
                .await;
            // Subscribed through another gateway than the one running it.
            let other = &cluster.gateways[(index + 1) % 3];
            let response = other
                .client
                .post(on(other, &task_url))
                .json(&serde_json::json!({"command": "subscribe", "webhookHref": hook}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            tasks.push(task_url);
        }
    }
    for _ in &tasks {
        gate.arrived().await;
    }
    gate.open(tasks.len());
    for task_url in &tasks {
        status_on(&cluster.gateways[0], task_url).await;
    }
    // Every notice is delivered once the outbox is empty.
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let left = cluster
            .database
            .count("SELECT COUNT(*) AS n FROM notices")
            .await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} notices not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().unwrap().clone();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (source, event) in received {
        let id = task_id(&source);
        *counts.entry((id, event)).or_default() += 1;
    }
    for task_url in &tasks {
        for event in ["status", "details"] {
            assert_eq!(
                counts.get(&(task_id(task_url), event.to_owned())),
                Some(&1),
                "{event} notices of {task_url}: {counts:?}"
            );
        }
    }
}

/// The plugin proxy answers only callers with the admin token, for a plugin
/// named in the `corral-plugin` header that is ready on its host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_proxy_refuses_callers_without_the_token() {
    use corral_proto::plugin::v1::{GetMetadataRequest, plugin_client::PluginClient};
    let folders = folders();
    let supervisor = common::Supervisor::start(&[folders.path()]);
    supervisor.ready("safe").await;
    let channel = tonic::transport::Endpoint::from_shared(supervisor.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |token: Option<&str>, plugin: Option<&str>| {
        let mut request = tonic::Request::new(GetMetadataRequest {});
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some(plugin) = plugin {
            request
                .metadata_mut()
                .insert("corral-plugin", plugin.parse().unwrap());
        }
        let mut client = PluginClient::new(channel.clone());
        async move { client.get_metadata(request).await }
    };
    let refused = call(None, Some("safe")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = call(Some("not-the-token"), Some("safe")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let unnamed = call(Some(common::ADMIN_TOKEN), None).await.unwrap_err();
    assert_eq!(unnamed.code(), tonic::Code::InvalidArgument, "{unnamed:?}");
    let unknown = call(Some(common::ADMIN_TOKEN), Some("nothing-here"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unavailable, "{unknown:?}");
    let metadata = call(Some(common::ADMIN_TOKEN), Some("safe"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (metadata.name.as_str(), metadata.version.as_str()),
        ("safe", "v1.0.0")
    );
}

/// A plugin host that announces itself in Redis is followed by the gateways on
/// the same Redis and prefix without being in their list, and takes tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_announced_in_redis_is_followed() {
    let (cluster, folders) = hosts_and_gateways(1, 1).await;
    let gateway = &cluster.gateways[0];
    let redis = cluster.redis.url();
    let announced = common::Supervisor::start_at(
        "127.0.0.11:0",
        &[folders.path()],
        &[],
        &["--redis-url", &redis, "--redis-prefix", cluster.prefix()],
    );
    wait_for_ready(gateway, |ready| {
        ready["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == 2 && hosts[1]["url"] == announced.url() && hosts[1]["ready"] == 3
        })
    })
    .await;
    // With the listed host drained, a task goes to the announced one.
    let drain = |supervisor: &common::Supervisor, draining: bool| {
        let supervisor = supervisor.url();
        async move {
            common::admin_client(&supervisor)
                .await
                .drain(corral_proto::supervisor::v1::DrainRequest { draining })
                .await
                .unwrap()
                .into_inner()
                .in_flight
        }
    };
    drain(&cluster.hosts[0], true).await;
    wait_for_ready(gateway, |ready| ready["hosts"][0]["draining"] == true).await;
    let gate = Gate::start().await;
    let task_url = gateway
        .submit(SAFE, &[("gate", &gate.url), ("text", "announced")])
        .await;
    gate.arrived().await;
    assert_eq!(
        drain(&announced, false).await,
        1,
        "the task runs on the announced host"
    );
    gate.open(1);
    assert_eq!(status_on(gateway, &task_url).await["status"], "SUCCESS");
}

/// An operator cancels, through one gateway, a task whose call runs on
/// another and writes nothing meanwhile: the call is stopped at once (the
/// task's end reaches its gateway over Redis), and every gateway shows the
/// task ended with who cancelled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_through_another_gateway_stops_its_call() {
    let (cluster, _folders) = cluster(2).await;
    let (runs, other) = (&cluster.gateways[0], &cluster.gateways[1]);
    let gate = Gate::start().await;
    let task_url = runs
        .submit(UNSAFE, &[("gate", &gate.url), ("text", "never")])
        .await;
    gate.arrived().await;
    let cancel = on(
        other,
        &format!("{}cancel/", task_url.replace("/tasks/", "/admin/tasks/")),
    );
    let response = other
        .client
        .post(cancel)
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The plugin stops reading: its call was cancelled on the first gateway.
    gate.abandoned().await;
    for gateway in [runs, other] {
        let status = status_on(gateway, &task_url).await;
        assert_eq!(status["status"], "FAILURE");
        assert_eq!(status["log"], "cancelled by the operator (admin token)");
    }
}

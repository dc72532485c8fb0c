//! Failure semantics: misbehaving plugins, limits, and tasks re-run after a crash
//! or a gateway restart where the plugin says its tasks are safe to retry.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use common::{
    PluginFolders,
    serve::{Corral, Db, TestDatabase},
    versioned_manifest,
};
use serde_json::{Value, json};

fn serve_with(database: &TestDatabase, folders: &PluginFolders, extra: &[&str]) -> Corral {
    Corral::serve_with(database, &[folders.path()], extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_fail_their_task_and_harm_nothing_else() {
    let folders = PluginFolders::new();
    folders.add("rogue", &common::rogue_manifest());
    folders.add("echo", &versioned_manifest("echo", "v1.0.0", ""));
    let database = TestDatabase::new(Db::Postgres).await;
    let corral = serve_with(&database, &folders, &["--max-output-bytes", "2097152"]);
    corral
        .wait_for_plugins(&["rogue@v1-0-0", "echo@v1-0-0"])
        .await;

    let cases = [
        (
            "chunk-first",
            "plugin rogue@v1-0-0 sent output bytes outside an output",
        ),
        ("empty", "plugin rogue@v1-0-0 sent an empty event"),
        (
            "no-result",
            "plugin rogue@v1-0-0 ended the task without a result",
        ),
        (
            "big-output",
            "plugin rogue@v1-0-0 sent an output larger than the limit of 2097152 bytes",
        ),
        ("huge", "plugin rogue@v1-0-0 failed: "),
    ];
    for (mode, reason) in cases {
        let task_url = corral
            .submit("rogue@v1-0-0", &[("mode", mode), ("size", "3145728")])
            .await;
        let status = corral.finished(&task_url).await;
        assert_eq!(status["status"], "FAILURE", "{mode}: {status}");
        let log = status["log"].as_str().unwrap();
        assert!(log.contains(reason), "{mode}: {log}");
        assert_eq!(status["outputs"], json!([]), "{mode}");
    }
    // The plugin, the gateway and the other plugins are unharmed.
    let task_url = corral.submit("rogue@v1-0-0", &[("mode", "fine")]).await;
    assert_eq!(corral.finished(&task_url).await["status"], "SUCCESS");
    let task_url = corral
        .submit("echo@v1-0-0", &[("text", "still here")])
        .await;
    let status = corral.finished(&task_url).await;
    assert_eq!(status["log"], "v1.0.0 says: still here");
    // A partial output never stays behind in the (shared) file store.
    let partial = database
        .count("SELECT COUNT(*) AS n FROM file_blobs WHERE complete = 0")
        .await;
    assert_eq!(partial, 0, "partial files left in the file store");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_create_no_task() {
    let folders = PluginFolders::new();
    folders.add("echo", &versioned_manifest("echo", "v1.0.0", ""));
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = serve_with(&database, &folders, &["--max-body-bytes", "1024"]);
    corral.wait_for_plugins(&["echo@v1-0-0"]).await;
    let big = "x".repeat(4096);
    let (code, _, body) = corral
        .post_form("/plugins/echo@v1-0-0/process/", &[("text", &big)])
        .await;
    assert_eq!(code, 413);
    assert_eq!(
        body,
        json!({"code": 413, "status": "Payload Too Large", "message": "The request body is too large."})
    );
    let form = reqwest::multipart::Form::new().text("text", big);
    let response = corral
        .client
        .post(corral.url("/plugins/echo@v1-0-0/process/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 413);
    let (code, _, _) = corral
        .post_form("/plugins/echo@v1-0-0/process/", &[("text", "small")])
        .await;
    assert_eq!(code, 303);
}

/// An HTTP gate on loopback: the first request waits until released (and tells
/// the test it arrived); later ones pass at once.
struct Gate {
    url: String,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
}

async fn gate() -> Gate {
    let calls = Arc::new(AtomicUsize::new(0));
    let (arrive, arrived) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::get(move || {
            let calls = calls.clone();
            let arrive = arrive.clone();
            async move {
                let _ = arrive.send(());
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first caller waits until it goes away.
                    std::future::pending::<()>().await;
                }
                "go"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gate { url, arrived }
}

async fn plugin_pid(corral_grpc: &str, plugin: &str) -> u32 {
    let mut admin = common::admin_client(&format!("http://{corral_grpc}")).await;
    admin
        .get_plugin(corral_proto::supervisor::v1::PluginRef {
            plugin: plugin.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_safe_task_runs_again_after_its_plugin_crashed() {
    let folders = PluginFolders::new();
    folders.add(
        "safe",
        &versioned_manifest(
            "safe",
            "v1.0.0",
            "retry_safe = true\n[restart]\nbackoff_initial = \"0s\"",
        ),
    );
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = serve_with(&database, &folders, &[]);
    corral.wait_for_plugins(&["safe@v1-0-0"]).await;
    let mut gate = gate().await;
    let task_url = corral
        .submit("safe@v1-0-0", &[("gate", &gate.url), ("text", "again")])
        .await;
    gate.arrived.recv().await.unwrap();
    let pid = plugin_pid(corral.grpc.as_ref().unwrap(), "safe").await;
    common::signal(pid, nix::sys::signal::Signal::SIGKILL);

    let status = corral.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(
        status["log"],
        "plugin safe@v1-0-0 stopped while running the task (killed by SIGKILL); running the task again\n\
         v1.0.0 says: again"
    );
}

/// On both databases: the restarted gateway adopts its own previous start's
/// call at once (the same data directory), on SQLite too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_safe_task_runs_again_when_a_killed_gateway_comes_back() {
    retry_safe_task_after_a_gateway_kill(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_safe_task_runs_again_when_a_killed_gateway_comes_back_on_sqlite() {
    retry_safe_task_after_a_gateway_kill(Db::Sqlite).await;
}

async fn retry_safe_task_after_a_gateway_kill(db: Db) {
    let folders = PluginFolders::new();
    folders.add(
        "safe",
        &versioned_manifest("safe", "v1.0.0", "retry_safe = true"),
    );
    let database = TestDatabase::new(db).await;
    let supervisor = common::Supervisor::start(&[folders.path()]);
    supervisor.ready("safe").await;
    let mut gateway = Corral::gateway(&database, &supervisor.url());
    gateway.wait_for_plugins(&["safe@v1-0-0"]).await;
    let mut gate = gate().await;
    let task_url = gateway
        .submit("safe@v1-0-0", &[("gate", &gate.url), ("text", "resumed")])
        .await;
    gate.arrived.recv().await.unwrap();
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();

    let again = Corral::gateway(&database, &supervisor.url());
    let path = task_url.split_once("/tasks/").unwrap().1;
    let status = again.finished(&again.url(&format!("/tasks/{path}"))).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(
        status["log"],
        "re-running: the gateway running the task went away\nv1.0.0 says: resumed"
    );
}

/// A claim whose answer was lost (the database went away as it committed)
/// leaves a running task of a live gateway with no call on it: the gateway
/// finds it among its own tasks and takes it up as it would an orphan. The
/// rows are written here exactly as a task's creation commits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_without_an_answer_is_taken_up_by_its_own_gateway() {
    use sqlx::Row;
    let folders = PluginFolders::new();
    folders.add(
        "safe",
        &versioned_manifest("safe", "v1.0.0", "retry_safe = true"),
    );
    folders.add("unsafe", &versioned_manifest("unsafe", "v1.0.0", ""));
    let database = TestDatabase::new(Db::Postgres).await;
    let supervisor = common::Supervisor::start(&[folders.path()]);
    let gateway = Corral::gateway(&database, &supervisor.url());
    gateway
        .wait_for_plugins(&["safe@v1-0-0", "unsafe@v1-0-0"])
        .await;
    let mut connection = database.connect().await;
    let owner: String = sqlx::query("SELECT id FROM gateways")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get("id");
    let base = gateway.url("");
    for (id, plugin) in [
        ("a".repeat(32), "safe@v1-0-0"),
        ("b".repeat(32), "unsafe@v1-0-0"),
    ] {
        sqlx::query(
            "INSERT INTO tasks (id, plugin, status, log, inputs, base_url, attempts, \
             created_at, updated_at, owner) \
             VALUES ($1, $2, 'PENDING', '', '{\"text\":\"stray\"}', $3, 1, 0, 0, $4)",
        )
        .bind(&id)
        .bind(plugin)
        .bind(base.trim_end_matches('/'))
        .bind(&owner)
        .execute(&mut connection)
        .await
        .unwrap();
    }

    let safe = gateway
        .finished(&gateway.url(&format!("/tasks/{}/", "a".repeat(32))))
        .await;
    assert_eq!(safe["status"], "SUCCESS", "{safe}");
    assert_eq!(
        safe["log"],
        "re-running: the task's call was cut off by a database failure\nv1.0.0 says: stray"
    );
    let not_safe = gateway
        .finished(&gateway.url(&format!("/tasks/{}/", "b".repeat(32))))
        .await;
    assert_eq!(not_safe["status"], "FAILURE", "{not_safe}");
    assert!(
        not_safe["log"].as_str().unwrap().contains(
            "the task's call was cut off by a database failure; \
             the plugin's tasks are not safe to run again"
        ),
        "{not_safe}"
    );
}

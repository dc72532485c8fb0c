//! SIGTERM on `corral serve`: running tasks get a grace period, the rest end
//! FAILURE with the reason, plugins stop, and the process exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{
    PluginFolders,
    serve::{Corral, Db, TestDatabase, plugins},
    versioned_manifest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_task_finish_within_the_grace_period() {
    let folders = PluginFolders::new();
    folders.add("gated", &versioned_manifest("gated", "v1.0.0", ""));
    let database = TestDatabase::new(Db::Sqlite).await;
    let mut corral = Corral::serve_with(&database, &[folders.path()], &["--shutdown-grace", "20s"]);
    corral.wait_for_plugins(&["gated@v1-0-0"]).await;

    // A gate the test opens after SIGTERM.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (arrive, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let opened = gate.clone();
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::get(move || {
            let opened = opened.clone();
            let arrive = arrive.clone();
            async move {
                let _ = arrive.send(());
                opened.notified().await;
                "go"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_url = format!("http://{}/gate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let task_url = corral
        .submit("gated@v1-0-0", &[("gate", &gate_url), ("text", "in time")])
        .await;
    arrived.recv().await.unwrap();
    common::signal(corral.child.id(), nix::sys::signal::Signal::SIGTERM);
    // It stops taking work at once (new connections are refused) while the task
    // still runs; only then is the task let through.
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while corral.client.get(corral.url("/")).send().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still taking requests after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        corral.child.try_wait().unwrap().is_none(),
        "it waits for the running task"
    );
    gate.notify_one();
    let status = corral.exited().await;
    assert!(status.success(), "{status:?}");

    let again = Corral::serve_with(&database, &[folders.path()], &[]);
    let path = task_url.split_once("/tasks/").unwrap().1;
    let (_, task) = again.get_json(&format!("/tasks/{path}")).await;
    assert_eq!(task["status"], "SUCCESS", "{task}");
    assert_eq!(task["log"], "v1.0.0 says: in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_what_outlasts_the_grace_period_as_failure_and_exits_zero() {
    let database = TestDatabase::new(Db::Postgres).await;
    let mut corral = Corral::serve_with(&database, &[&plugins()], &["--shutdown-grace", "300ms"]);
    corral
        .wait_for_plugins(&["hello-world-multi-step@v0-2-1"])
        .await;
    let task_url = corral
        .submit(
            "hello-world-multi-step@v0-2-1",
            &[("inputStr", "never answered")],
        )
        .await;
    corral.wait_for_step(&task_url).await;
    let mut admin = corral_proto::supervisor::v1::admin_client::AdminClient::connect(format!(
        "http://{}",
        corral.grpc.as_ref().unwrap()
    ))
    .await
    .unwrap();
    let pids: Vec<u32> = admin
        .list_plugins(corral_proto::supervisor::v1::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins
        .iter()
        .map(|plugin| plugin.pid)
        .collect();
    assert_eq!(pids.len(), 5);
    drop(admin);

    let status = corral.terminate().await;
    assert!(status.success(), "{status:?}");
    // The plugins were stopped, not orphaned.
    assert!(pids.iter().all(|pid| !common::alive(*pid)), "{pids:?}");

    let again = Corral::serve(&database, &[&plugins()]);
    let path = task_url.split_once("/tasks/").unwrap().1;
    let (_, task) = again.get_json(&format!("/tasks/{path}")).await;
    assert_eq!(task["status"], "FAILURE", "{task}");
    assert_eq!(
        task["log"],
        "the gateway shut down before the task finished"
    );
}

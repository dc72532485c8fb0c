//! SIGTERM on `corral serve`: running calls get a grace period, the rest end
//! FAILURE with the reason, tasks waiting for a step stay waiting, plugins
//! stop, and the process exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Gate, PluginFolders,
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
    let gate = Gate::start().await;
    let task_url = corral
        .submit("gated@v1-0-0", &[("gate", &gate.url), ("text", "in time")])
        .await;
    gate.arrived().await;
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
    gate.open(1);
    let status = corral.exited().await;
    assert!(status.success(), "{status:?}");

    let again = Corral::serve_with(&database, &[folders.path()], &[]);
    let path = task_url.split_once("/tasks/").unwrap().1;
    let (_, task) = again.get_json(&format!("/tasks/{path}")).await;
    assert_eq!(task["status"], "SUCCESS", "{task}");
    assert_eq!(task["log"], "v1.0.0 says: in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_running_calls_past_the_grace_and_leaves_waiting_tasks_waiting() {
    let folders = PluginFolders::new();
    folders.add("gated", &versioned_manifest("gated", "v1.0.0", ""));
    let database = TestDatabase::new(Db::Postgres).await;
    let both: [&std::path::Path; 2] = [&plugins(), folders.path()];
    let mut corral = Corral::serve_with(&database, &both, &["--shutdown-grace", "300ms"]);
    corral
        .wait_for_plugins(&["hello-world-multi-step@v0-2-1", "gated@v1-0-0"])
        .await;
    let waiting = corral
        .submit("hello-world-multi-step@v0-2-1", &[("inputStr", "later")])
        .await;
    corral.wait_for_step(&waiting).await;
    let gate = Gate::start().await;
    let running = corral
        .submit("gated@v1-0-0", &[("gate", &gate.url), ("text", "too late")])
        .await;
    gate.arrived().await;
    let mut admin =
        common::admin_client(&format!("http://{}", corral.grpc.as_ref().unwrap())).await;
    let pids: Vec<u32> = admin
        .list_plugins(corral_proto::supervisor::v1::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins
        .iter()
        .map(|plugin| plugin.pid)
        .collect();
    assert_eq!(pids.len(), 7);
    drop(admin);

    let status = corral.terminate().await;
    assert!(status.success(), "{status:?}");
    // The plugins were stopped, not orphaned.
    assert!(pids.iter().all(|pid| !common::alive(*pid)), "{pids:?}");

    let again = Corral::serve(&database, &both);
    let path = |url: &str| format!("/tasks/{}", url.split_once("/tasks/").unwrap().1);
    let (_, task) = again.get_json(&path(&running)).await;
    assert_eq!(task["status"], "FAILURE", "{task}");
    assert_eq!(
        task["log"],
        "the gateway shut down before the task finished"
    );
    // The task that waited for a person still does.
    let (_, task) = again.get_json(&path(&waiting)).await;
    assert_eq!(task["status"], "PENDING", "{task}");
    assert_eq!(task["steps"][0]["cleared"], false);
}

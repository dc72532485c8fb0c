//! Tasks outlive every process: a task waiting for its step survives every
//! restart and continues where it stopped; long calls continue from their last
//! checkpoint; webhook notices survive crashes and dead subscribers; event
//! streams resume where the client left. Real processes, both databases.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use common::{
    Gate, Supervisor,
    serve::{
        Corral, Db, StreamEvent, TestDatabase, open_stream, plugins, read_events, stream_events,
        task_id,
    },
};
use corral_proto::supervisor::v1::{PluginRef, PluginState};
use serde_json::{Value, json};

on_both_databases!(
    waiting_task_survives_a_plugin_sigkill,
    waiting_task_survives_an_operator_restart,
    waiting_task_survives_a_supervisor_kill,
    waiting_task_survives_a_gateway_sigterm,
    waiting_task_survives_a_gateway_kill,
    waiting_task_survives_a_serve_kill,
    twenty_steps_with_a_plugin_restart_between_every_two,
    a_step_resumes_on_the_version_its_task_started_on,
    a_retry_safe_call_continues_from_its_checkpoint,
    a_call_not_safe_to_retry_fails_with_the_reason,
    a_call_found_running_with_unreadable_inputs_fails_with_that_reason,
    a_step_while_the_plugin_is_down_is_refused_and_kept,
    the_same_step_submitted_twice_at_once_runs_once,
    an_event_stream_resumes_after_its_last_event_id,
    a_subscriber_that_was_down_gets_every_notice_in_order,
    a_dead_subscriber_does_not_delay_a_live_one,
    notices_committed_before_a_kill_are_delivered_after_the_start,
);

const MULTI: &str = "hello-world-multi-step@v0-2-1";
const MULTI_FOLDER: &str = "hello-world-multi-step";

/// How the system under test runs, and how it is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    PluginKill,
    Operator,
    SupervisorKill,
    GatewayTerm,
    GatewayKill,
    ServeKill,
}

/// `corral serve`, or a supervisor and a gateway as separate processes.
struct System {
    supervisor: Option<Supervisor>,
    gateway: Corral,
    /// The supervisor's admin URL.
    admin: String,
}

impl System {
    fn start(database: &TestDatabase, separate: bool) -> Self {
        if !separate {
            let gateway = Corral::serve(database, &[&plugins()]);
            let admin = format!("http://{}", gateway.grpc.as_ref().unwrap());
            return Self {
                supervisor: None,
                gateway,
                admin,
            };
        }
        let address = common::free_address();
        let supervisor = Supervisor::start_at(&address, &[&plugins()], &[], &[]);
        let gateway = Corral::gateway(database, &supervisor.url());
        Self {
            admin: supervisor.url(),
            supervisor: Some(supervisor),
            gateway,
        }
    }

    async fn admin(&self) -> corral_proto::admin::AdminApi {
        common::admin_client(&self.admin).await
    }

    /// The plugin's pid now.
    async fn pid(&self, plugin: &str) -> u32 {
        let reference = PluginRef {
            plugin: plugin.into(),
        };
        self.admin()
            .await
            .get_plugin(reference)
            .await
            .unwrap()
            .into_inner()
            .pid
    }

    /// Waits until `plugin` is ready in a process other than `old`.
    async fn ready_again(&self, plugin: &str, old: u32) {
        common::watch_until(&self.admin, plugin, "ready again", |status| {
            status.state == PluginState::Ready as i32 && status.pid != old
        })
        .await;
    }

    /// An operator's restart of `plugin`; returns once a new process is ready.
    async fn restart(&self, plugin: &str) {
        let old = self.pid(plugin).await;
        let reference = PluginRef {
            plugin: plugin.into(),
        };
        self.admin().await.restart_plugin(reference).await.unwrap();
        self.ready_again(plugin, old).await;
    }

    /// The same task as the gateway that runs now names it.
    fn task_url(&self, task_url: &str) -> String {
        self.gateway.url(&format!("/tasks/{}/", task_id(task_url)))
    }
}

/// POSTs a step's form as a client following `Retry-After` would: a 503 (the
/// plugin is not ready yet) must leave the step waiting, and is tried again.
async fn submit_step(corral: &Corral, href: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let response = corral
            .client
            .post(corral.url(href))
            .form(form)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        if code != 503 {
            return (code, response.json().await.unwrap_or(Value::Null));
        }
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(Instant::now() < deadline, "the plugin never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Follows the task's stream until it waits for step `step_id` (asked now,
/// or already in the snapshot, uncleared).
async fn wait_for_step(corral: &Corral, task_url: &str, step_id: &str) -> Value {
    let waiting = |event: &StreamEvent| match event.name.as_str() {
        "step" => event.data["stepId"] == step_id,
        "snapshot" => event.data["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|step| step["stepId"] == step_id && step["cleared"] == false)
        }),
        _ => false,
    };
    let events = stream_events(&corral.client, task_url, None, waiting)
        .await
        .unwrap();
    let (_, status) = corral.get_json(task_url).await;
    assert!(!events.is_empty());
    status
}

/// The task's outputs as (name, text).
async fn outputs(corral: &Corral, status: &Value) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for output in status["outputs"].as_array().unwrap() {
        let text = corral.get_text(output["href"].as_str().unwrap()).await;
        texts.push((output["name"].as_str().unwrap().to_owned(), text));
    }
    texts
}

async fn waiting_task_survives(db: Db, restart: Restart) {
    let database = TestDatabase::new(db).await;
    let separate = matches!(
        restart,
        Restart::SupervisorKill | Restart::GatewayTerm | Restart::GatewayKill
    );
    let mut system = System::start(&database, separate);
    system.gateway.wait_for_plugins(&[MULTI]).await;
    let task_url = system
        .gateway
        .submit(MULTI, &[("inputStr", "input text")])
        .await;
    wait_for_step(&system.gateway, &task_url, "demo-step").await;

    match restart {
        Restart::PluginKill => {
            let old = system.pid(MULTI_FOLDER).await;
            common::signal(old, nix::sys::signal::Signal::SIGKILL);
            system.ready_again(MULTI_FOLDER, old).await;
        }
        Restart::Operator => {
            system.restart(MULTI_FOLDER).await;
        }
        Restart::SupervisorKill => {
            let address = system.supervisor.as_ref().unwrap().address.clone();
            drop(system.supervisor.take());
            let supervisor = Supervisor::start_at(&address, &[&plugins()], &[], &[]);
            supervisor.ready(MULTI_FOLDER).await;
            system.supervisor = Some(supervisor);
        }
        Restart::GatewayTerm | Restart::GatewayKill => {
            if restart == Restart::GatewayTerm {
                assert!(system.gateway.terminate().await.success());
            } else {
                system.gateway.child.kill().unwrap();
                system.gateway.child.wait().unwrap();
            }
            system.gateway = Corral::gateway(&database, &system.admin);
        }
        Restart::ServeKill => {
            system.gateway.child.kill().unwrap();
            system.gateway.child.wait().unwrap();
            system = System::start(&database, false);
        }
    }

    // Still waiting, its step uncleared.
    let task_url = system.task_url(&task_url);
    let (code, status) = system.gateway.get_json(&task_url).await;
    assert_eq!(code, 200);
    assert_eq!(status["status"], "PENDING", "{status}");
    assert_eq!(status["steps"][0]["stepId"], "demo-step");
    assert_eq!(status["steps"][0]["cleared"], false);
    assert_eq!(status["progress"]["value"], 50);

    // Continued by whichever process of the plugin runs now.
    let href = status["steps"][0]["href"].as_str().unwrap();
    let form = [("inputStr", "Input from preprocessing: input text")];
    let (code, body) = submit_step(&system.gateway, href, &form).await;
    assert_eq!(code, 303, "{body}");
    let status = system.gateway.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(status["steps"][0]["cleared"], true);
    assert_eq!(
        outputs(&system.gateway, &status).await,
        [
            (
                "output1.txt".to_string(),
                "Processed in the preprocessing step: input text".to_string()
            ),
            (
                "output2.txt".to_string(),
                "Processed in the processing step: input text Input from preprocessing: input text"
                    .to_string()
            ),
        ]
    );
}

async fn waiting_task_survives_a_plugin_sigkill(db: Db) {
    waiting_task_survives(db, Restart::PluginKill).await;
}

async fn waiting_task_survives_an_operator_restart(db: Db) {
    waiting_task_survives(db, Restart::Operator).await;
}

async fn waiting_task_survives_a_supervisor_kill(db: Db) {
    waiting_task_survives(db, Restart::SupervisorKill).await;
}

async fn waiting_task_survives_a_gateway_sigterm(db: Db) {
    waiting_task_survives(db, Restart::GatewayTerm).await;
}

async fn waiting_task_survives_a_gateway_kill(db: Db) {
    waiting_task_survives(db, Restart::GatewayKill).await;
}

async fn waiting_task_survives_a_serve_kill(db: Db) {
    waiting_task_survives(db, Restart::ServeKill).await;
}

async fn twenty_steps_with_a_plugin_restart_between_every_two(db: Db) {
    const PLUGIN: &str = "manual-classification@v0-1-0";
    let database = TestDatabase::new(db).await;
    let system = System::start(&database, false);
    system.gateway.wait_for_plugins(&[PLUGIN]).await;
    let entities: Vec<String> = (1..=20).map(|n| format!("e{n}")).collect();
    let task_url = system
        .gateway
        .submit(PLUGIN, &[("entities", &entities.join("\n"))])
        .await;
    // The plugin restarts while the task waits, after every second step.
    let restart = || system.restart("manual-classification");
    for n in 1..=20 {
        let step_id = format!("class-{n}");
        let status = wait_for_step(&system.gateway, &task_url, &step_id).await;
        if n % 2 == 1 && n > 1 {
            restart().await;
        }
        let step = status["steps"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(step["stepId"], step_id.as_str());
        let members = format!("e{n}");
        let label = format!("c{}", n % 3);
        let form = [("label", label.as_str()), ("members", members.as_str())];
        let (code, body) =
            submit_step(&system.gateway, step["href"].as_str().unwrap(), &form).await;
        assert_eq!(code, 303, "{body}");
    }
    let status = wait_for_step(&system.gateway, &task_url, "done").await;
    restart().await;
    let done = status["steps"].as_array().unwrap().last().unwrap().clone();
    let (code, body) = submit_step(
        &system.gateway,
        done["href"].as_str().unwrap(),
        &[("action", "finish")],
    )
    .await;
    assert_eq!(code, 303, "{body}");

    let status = system.gateway.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    let steps = status["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 21);
    assert!(steps.iter().all(|step| step["cleared"] == true));
    let texts = outputs(&system.gateway, &status).await;
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].0, "labels.json");
    let labels: Vec<Value> = serde_json::from_str(&texts[0].1).unwrap();
    let mut expected: Vec<Value> = (1..=20)
        .map(|n| json!({"ID": format!("e{n}"), "href": "", "label": format!("c{}", n % 3)}))
        .collect();
    expected.sort_by_key(|entity| entity["ID"].as_str().unwrap().to_owned());
    assert_eq!(labels, expected);
    assert!(
        status["log"]
            .as_str()
            .unwrap()
            .starts_with("20 entities to classify\nclass `c1`: 1 entities"),
        "{status}"
    );
}

async fn a_step_resumes_on_the_version_its_task_started_on(db: Db) {
    // The old and the new version side by side, as an operator deploys them.
    let folders = common::PluginFolders::new();
    folders.add(
        "echo-old",
        &common::versioned_manifest("echo", "v1.0.0", ""),
    );
    let database = TestDatabase::new(db).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["echo@v1-0-0"]).await;
    let task_url = corral
        .submit("echo@v1-0-0", &[("step", "true"), ("text", "hi")])
        .await;
    let status = wait_for_step(&corral, &task_url, "confirm").await;
    let unfinished = |body: &Value| body["unfinishedTasks"].clone();
    let (_, body) = corral.get_json("/admin/plugins/").await;
    assert_eq!(
        unfinished(&body),
        json!([{"plugin": "echo@v1-0-0", "waiting": 1, "running": 0}])
    );
    assert_eq!(body["plugins"][0]["waitingTasks"], 1);

    // The new version arrives (an operator's start re-reads the folders).
    folders.add(
        "echo-new",
        &common::versioned_manifest("echo", "v2.0.0", ""),
    );
    drop(corral);
    let restarted = Corral::serve(&database, &[folders.path()]);
    restarted
        .wait_for_plugins(&["echo@v1-0-0", "echo@v2-0-0"])
        .await;
    let href = status["steps"][0]["href"].as_str().unwrap();
    let href = restarted.url(&format!(
        "/plugins/{}",
        href.split_once("/plugins/").unwrap().1
    ));
    let (code, body) = submit_step(&restarted, &href, &[("answer", "yes")]).await;
    assert_eq!(code, 303, "{body}");
    let task_url = restarted.url(&format!("/tasks/{}/", task_id(&task_url)));
    let status = restarted.finished(&task_url).await;
    assert_eq!(status["log"], "confirmed: yes\nv1.0.0 says: hi");
    // The old version has nothing left: it can go.
    let (_, body) = restarted.get_json("/admin/plugins/").await;
    assert_eq!(unfinished(&body), json!([]));
}

/// A plugin working through three parts, killed while it waits to do its
/// second: returns the task's final status.
async fn killed_after_the_first_checkpoint(
    db: Db,
    retry_safe: bool,
) -> (TestDatabase, Corral, Value) {
    let folders = common::PluginFolders::new();
    let extra = if retry_safe { "retry_safe = true" } else { "" };
    folders.add(
        "parts",
        &common::versioned_manifest("parts", "v1.0.0", extra),
    );
    let database = TestDatabase::new(db).await;
    let system = Corral::serve(&database, &[folders.path()]);
    system.wait_for_plugins(&["parts@v1-0-0"]).await;
    let gate = Gate::start().await;
    let task_url = system
        .submit("parts@v1-0-0", &[("parts", "3"), ("gate", &gate.url)])
        .await;
    gate.open(1);
    // Part 1's output follows the first checkpoint: once it is stored, the
    // checkpoint is, and the call waits at the gate. (Replayed from the first
    // event: it may have come before this client.)
    stream_events(&system.client, &task_url, Some(0), |event| {
        event.name == "output" && event.data["name"] == "part-1.txt"
    })
    .await
    .unwrap();
    let admin = format!("http://{}", system.grpc.as_ref().unwrap());
    let mut client = common::admin_client(&admin).await;
    let reference = PluginRef {
        plugin: "parts".into(),
    };
    let pid = client.get_plugin(reference).await.unwrap().into_inner().pid;
    common::signal(pid, nix::sys::signal::Signal::SIGKILL);
    // Parts 1 and 2 (a permit more, should the killed call's request still wait).
    gate.open(3);
    let status = system.finished(&task_url).await;
    (database, system, status)
}

async fn a_retry_safe_call_continues_from_its_checkpoint(db: Db) {
    let (_database, system, status) = killed_after_the_first_checkpoint(db, true).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(
        status["log"],
        "part 0 done\n\
         plugin parts@v1-0-0 stopped while running the task (killed by SIGKILL); running the task again\n\
         continuing from checkpoint 1 (attempt 2)\n\
         part 1 done\n\
         part 2 done"
    );
    // The output written after the checkpoint by the run that crashed is gone.
    assert_eq!(
        outputs(&system, &status).await,
        [
            ("part-0.txt".to_string(), "part 0 (attempt 1)".to_string()),
            ("part-1.txt".to_string(), "part 1 (attempt 2)".to_string()),
            ("part-2.txt".to_string(), "part 2 (attempt 2)".to_string()),
        ]
    );
}

async fn a_call_not_safe_to_retry_fails_with_the_reason(db: Db) {
    let (_database, _system, status) = killed_after_the_first_checkpoint(db, false).await;
    assert_eq!(status["status"], "FAILURE", "{status}");
    assert_eq!(
        status["log"],
        "part 0 done\nplugin parts@v1-0-0 stopped while running the task (killed by SIGKILL)"
    );
}

async fn a_call_found_running_with_unreadable_inputs_fails_with_that_reason(db: Db) {
    let folders = common::PluginFolders::new();
    let manifest = common::versioned_manifest("parts", "v1.0.0", "retry_safe = true");
    folders.add("parts", &manifest);
    let database = TestDatabase::new(db).await;
    let supervisor = Supervisor::start(&[folders.path()]);
    let gateway = Corral::gateway(&database, &supervisor.url());
    gateway.wait_for_plugins(&["parts@v1-0-0"]).await;
    let gate = Gate::start().await;
    let task_url = gateway
        .submit("parts@v1-0-0", &[("parts", "1"), ("gate", &gate.url)])
        .await;
    drop(gateway);
    // The stored inputs are damaged while no gateway runs.
    let mut connection = database.connect().await;
    sqlx::query("UPDATE tasks SET inputs = '{not json' WHERE id = $1")
        .bind(task_id(&task_url))
        .execute(&mut connection)
        .await
        .unwrap();
    let again = Corral::gateway(&database, &supervisor.url());
    let status = again
        .finished(&again.url(&format!("/tasks/{}/", task_id(&task_url))))
        .await;
    assert_eq!(status["status"], "FAILURE", "{status}");
    assert_eq!(status["log"], "the task's stored inputs cannot be read");
}

/// Waits until the gateway no longer offers `identifier` (it learns of a stop
/// from the supervisor's stream; there is no HTTP event for it).
async fn wait_until_not_offered(corral: &Corral, identifier: &str) {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let (code, _) = corral.get_json(&format!("/plugins/{identifier}/")).await;
        if code != 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{identifier} still offered");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn a_step_while_the_plugin_is_down_is_refused_and_kept(db: Db) {
    let database = TestDatabase::new(db).await;
    let system = System::start(&database, false);
    system.gateway.wait_for_plugins(&[MULTI]).await;
    let task_url = system
        .gateway
        .submit(MULTI, &[("inputStr", "input text")])
        .await;
    let status = wait_for_step(&system.gateway, &task_url, "demo-step").await;
    let href = status["steps"][0]["href"].as_str().unwrap().to_owned();
    let reference = || PluginRef {
        plugin: MULTI_FOLDER.into(),
    };
    system.admin().await.stop_plugin(reference()).await.unwrap();
    wait_until_not_offered(&system.gateway, MULTI).await;

    let form = [("inputStr", "later")];
    let response = system
        .gateway
        .client
        .post(&href)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 503);
    assert_eq!(body["status"], "Service Unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("not ready"),
        "{body}"
    );
    let (_, status) = system.gateway.get_json(&task_url).await;
    assert_eq!(status["status"], "PENDING");
    assert_eq!(status["steps"][0]["cleared"], false);

    system
        .admin()
        .await
        .start_plugin(reference())
        .await
        .unwrap();
    let (code, body) = submit_step(&system.gateway, &href, &form).await;
    assert_eq!(code, 303, "{body}");
    let status = system.gateway.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(
        outputs(&system.gateway, &status).await[1].1,
        "Processed in the processing step: input text later"
    );
}

async fn the_same_step_submitted_twice_at_once_runs_once(db: Db) {
    let database = TestDatabase::new(db).await;
    let system = System::start(&database, false);
    system.gateway.wait_for_plugins(&[MULTI]).await;
    let task_url = system
        .gateway
        .submit(MULTI, &[("inputStr", "input text")])
        .await;
    let status = wait_for_step(&system.gateway, &task_url, "demo-step").await;
    let href = status["steps"][0]["href"].as_str().unwrap();
    let (first, second) = tokio::join!(
        system.gateway.post_form(href, &[("inputStr", "first")]),
        system.gateway.post_form(href, &[("inputStr", "second")]),
    );
    let mut codes = [first.0, second.0];
    codes.sort_unstable();
    assert_eq!(codes, [303, 409], "{first:?} {second:?}");
    let conflict = if first.0 == 409 { &first.2 } else { &second.2 };
    assert_eq!(conflict["message"], "This step was already submitted.");
    let winner = if first.0 == 303 { "first" } else { "second" };

    let status = system.gateway.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    let texts = outputs(&system.gateway, &status).await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(
        texts[1].1,
        format!("Processed in the processing step: input text {winner}")
    );
}

async fn an_event_stream_resumes_after_its_last_event_id(db: Db) {
    let database = TestDatabase::new(db).await;
    let system = System::start(&database, false);
    let corral = &system.gateway;
    corral.wait_for_plugins(&[MULTI]).await;
    let task_url = corral.submit(MULTI, &[("inputStr", "input text")]).await;
    // A client follows until the step, then goes away.
    let seen = stream_events(&corral.client, &task_url, None, |event| {
        event.name == "step" || event.name == "snapshot" && event.data["steps"].is_array()
    })
    .await
    .unwrap();
    let last_seen = seen.last().unwrap().id.unwrap();
    assert!(seen[0].name == "snapshot" && seen[0].id.is_some());

    // A client with an id that is not one of ours resumes from the end.
    let foreign = open_stream(&corral.client, &task_url, Some(99))
        .await
        .unwrap();
    let href = corral.get_json(&task_url).await.1["steps"][0]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, body) = corral.post_form(&href, &[("inputStr", "more")]).await;
    assert_eq!(code, 303, "{body}");
    corral.finished(&task_url).await;
    let after_foreign = read_events(foreign, |event| event.name == "status").await;
    let ids: Vec<u64> = after_foreign
        .iter()
        .map(|event| event.id.unwrap())
        .collect();
    assert_eq!(ids, [3, 4, 5, 6]);

    // It comes back with the id it had: exactly what it missed.
    let missed = stream_events(&corral.client, &task_url, Some(last_seen), |event| {
        event.name == "status"
    })
    .await
    .unwrap();
    let names: Vec<&str> = missed.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(names, ["progress", "output", "output", "status"]);
    let ids: Vec<u64> = missed.iter().map(|event| event.id.unwrap()).collect();
    assert_eq!(ids, [3, 4, 5, 6]);
    assert_eq!(last_seen, 2);
    assert_eq!(missed[3].data, json!({"status": "SUCCESS"}));

    // From the start: every event once, in order.
    let all = stream_events(&corral.client, &task_url, Some(0), |event| {
        event.name == "status"
    })
    .await
    .unwrap();
    let names: Vec<&str> = all.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(
        names,
        ["progress", "step", "progress", "output", "output", "status"]
    );
    assert_eq!(all[1].data["stepId"], "demo-step");

    // A finished task's stream without an id: its snapshot, then its status.
    let plain = stream_events(&corral.client, &task_url, None, |event| {
        event.name == "status"
    })
    .await
    .unwrap();
    let names: Vec<&str> = plain.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(names, ["snapshot", "status"]);
    assert_eq!(plain[1].id, Some(6));

    // A client that has the status is told not to come back.
    assert!(
        stream_events(&corral.client, &task_url, Some(6), |_| true)
            .await
            .is_none()
    );
}

/// A webhook receiver on loopback recording the `event` of every notice.
struct Receiver {
    received: Arc<Mutex<Vec<String>>>,
    arrived: tokio::sync::mpsc::UnboundedReceiver<Instant>,
}

impl Receiver {
    /// Serves on `address` (a port reserved earlier, so subscriptions can name
    /// it while nothing listens).
    async fn start(address: &str) -> Self {
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let (notify, arrived) = tokio::sync::mpsc::unbounded_channel();
        let sink = received.clone();
        type Query = axum::extract::Query<std::collections::HashMap<String, String>>;
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::extract::Query(query): Query| {
                let (sink, notify) = (sink.clone(), notify.clone());
                async move {
                    sink.lock().unwrap().push(query["event"].clone());
                    let _ = notify.send(Instant::now());
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { received, arrived }
    }

    /// Waits for `count` notices; returns their events and when the last came.
    async fn wait_for(&mut self, count: usize) -> (Vec<String>, Instant) {
        let mut last = Instant::now();
        while self.received.lock().unwrap().len() < count {
            last = tokio::time::timeout(common::DEADLINE, self.arrived.recv())
                .await
                .unwrap_or_else(|_| panic!("notices missing: {:?}", self.received.lock().unwrap()))
                .unwrap();
        }
        (self.received.lock().unwrap().clone(), last)
    }
}

/// Every notice of a task with a step, in order.
const ALL_NOTICES: [&str; 5] = ["steps", "details", "steps", "status", "details"];

/// Runs a gated task with a step to its end, `hooks` subscribed before it
/// begins; returns the task's URL and when its step was submitted.
async fn task_with_a_step(corral: &Corral, hooks: &[String]) -> (String, Instant) {
    let gate = Gate::start().await;
    let task_url = corral
        .submit("gated@v1-0-0", &[("gate", &gate.url), ("step", "true")])
        .await;
    for hook in hooks {
        let subscribe = json!({"command": "subscribe", "webhookHref": hook});
        let response = corral
            .client
            .post(&task_url)
            .json(&subscribe)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    gate.open(1);
    let status = wait_for_step(corral, &task_url, "confirm").await;
    let href = status["steps"][0]["href"].as_str().unwrap();
    let (code, _, body) = corral.post_form(href, &[("answer", "yes")]).await;
    assert_eq!(code, 303, "{body}");
    let submitted = Instant::now();
    let status = corral.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    (task_url, submitted)
}

fn gated_plugins() -> common::PluginFolders {
    let folders = common::PluginFolders::new();
    folders.add("gated", &common::versioned_manifest("gated", "v1.0.0", ""));
    folders
}

async fn a_subscriber_that_was_down_gets_every_notice_in_order(db: Db) {
    let folders = gated_plugins();
    let database = TestDatabase::new(db).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["gated@v1-0-0"]).await;
    let address = common::free_address();
    task_with_a_step(&corral, &[format!("http://{address}/hook")]).await;
    // Every notice was refused so far; the receiver comes up now.
    let mut receiver = Receiver::start(&address).await;
    let (events, _) = receiver.wait_for(ALL_NOTICES.len()).await;
    assert_eq!(events, ALL_NOTICES);
}

async fn a_dead_subscriber_does_not_delay_a_live_one(db: Db) {
    let folders = gated_plugins();
    let database = TestDatabase::new(db).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["gated@v1-0-0"]).await;
    // The dead one takes connections and never answers (each POST waits for
    // its 5 s timeout).
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = dead.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let live_address = common::free_address();
    let mut live = Receiver::start(&live_address).await;
    let (task_url, submitted) =
        task_with_a_step(&corral, &[dead_url, format!("http://{live_address}/hook")]).await;
    let (events, last) = live.wait_for(ALL_NOTICES.len()).await;
    assert_eq!(events, ALL_NOTICES);
    // All of the live one's notices came while the dead one still held its
    // first POST open.
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) <= 1,
        "the dead subscriber was retried before the live one got its notices"
    );
    eprintln!(
        "webhook delivery with a dead subscriber present: the task's end delivered {} ms after its step was submitted ({task_url})",
        last.saturating_duration_since(submitted).as_millis()
    );
}

async fn notices_committed_before_a_kill_are_delivered_after_the_start(db: Db) {
    let folders = gated_plugins();
    let database = TestDatabase::new(db).await;
    let mut corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["gated@v1-0-0"]).await;
    let address = common::free_address();
    task_with_a_step(&corral, &[format!("http://{address}/hook")]).await;
    // The notices are committed and undelivered (nothing listens): kill -9.
    corral.child.kill().unwrap();
    corral.child.wait().unwrap();
    let mut receiver = Receiver::start(&address).await;
    let _again = Corral::serve(&database, &[folders.path()]);
    let (events, _) = receiver.wait_for(ALL_NOTICES.len()).await;
    assert_eq!(events, ALL_NOTICES);
}

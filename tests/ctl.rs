//! `corral ctl` against a running `corral serve`, including its error cases.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

use common::serve::{Corral, Db, TestDatabase, plugins};
use serde_json::Value;

const SECRET: &str = "ctl-test-secret-long-enough-for-hs256";

#[derive(Clone)]
struct Ctl {
    supervisor: String,
    gateway: String,
    /// The gateway's bearer token, given as CORRAL_TOKEN.
    token: Option<String>,
    /// Whether the admin token can be read (CORRAL_ADMIN_TOKEN), as a local
    /// operator's can: then ctl sends it to the gateway without a --token.
    admin_token: bool,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .args([
                "ctl",
                "--supervisor",
                &self.supervisor,
                "--gateway",
                &self.gateway,
            ])
            .args(args)
            .env_remove("CORRAL_TOKEN")
            .env_remove("CORRAL_ADMIN_TOKEN")
            // No admin-token file there either.
            .env("CORRAL_DATA_DIR", "/nonexistent");
        if self.admin_token {
            command.env("CORRAL_ADMIN_TOKEN", common::ADMIN_TOKEN);
        }
        if let Some(token) = &self.token {
            command.env("CORRAL_TOKEN", token);
        }
        command
    }

    /// The same without the admin token.
    fn without_admin_token(&self) -> Self {
        Self {
            admin_token: false,
            ..self.clone()
        }
    }

    /// The same with the gateway's bearer token.
    fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects failure with one line on stderr; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(1), "ctl {args:?} should fail");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        stderr.trim_end().to_owned()
    }

    fn plugin(&self, name: &str) -> Value {
        let plugins: Value = serde_json::from_str(&self.ok(&["--json", "plugins"])).unwrap();
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|plugin| plugin["plugin"] == name)
            .unwrap()
            .clone()
    }
}

async fn start() -> (TestDatabase, Corral, Ctl) {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve_with(
        &database,
        &[&plugins()],
        &["--jwt-secret-file", &database.secret_file(SECRET)],
    );
    corral
        .wait_for_plugins(&["hello-world@v0-2-1", "hello-world-multi-step@v0-2-1"])
        .await;
    let ctl = Ctl {
        supervisor: format!("http://{}", corral.grpc.as_ref().unwrap()),
        gateway: corral.http.clone(),
        token: None,
        admin_token: true,
    };
    (database, corral, ctl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_waiting_for_a_step_are_counted_per_identifier() {
    let (_database, corral, ctl) = start().await;
    let task_url = corral
        .submit("hello-world-multi-step@v0-2-1", &[("inputStr", "x")])
        .await;
    corral.wait_for_step(&task_url).await;
    let multi = ctl.plugin("hello-world-multi-step");
    assert_eq!(multi["waitingTasks"], 1, "{multi}");
    assert_eq!(multi["runningTasks"], 0, "{multi}");
    assert_eq!(ctl.plugin("hello-world")["waitingTasks"], 0);
    let table = ctl.ok(&["plugins"]);
    let row = table
        .lines()
        .find(|line| line.starts_with("hello-world-multi-step "))
        .unwrap();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[columns.len() - 2..], ["1", "0"], "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_restarted_stopped_and_started() {
    let (_database, _corral, ctl) = start().await;
    let table = ctl.ok(&["plugins"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "PLUGIN",
            "IDENTIFIER",
            "STATE",
            "PID",
            "RESTARTS",
            "UPTIME",
            "LAST",
            "EXIT",
            "WAITING",
            "RUNNING"
        ]
    );
    let row = table
        .lines()
        .find(|line| line.starts_with("hello-world "))
        .unwrap();
    assert!(
        row.contains("hello-world@v0-2-1") && row.contains("ready"),
        "{row}"
    );

    let before = ctl.plugin("hello-world");
    assert_eq!(before["state"], "ready");
    let restarted: Value =
        serde_json::from_str(&ctl.ok(&["--json", "restart", "hello-world"])).unwrap();
    assert_ne!(restarted["pid"], before["pid"]);
    assert_eq!(restarted["restarts"], 1);
    assert_eq!(
        restarted["lastExitReason"],
        "restarted by operator (exited with code 0)"
    );

    let stopped = ctl.ok(&["stop", "hello-world"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(ctl.plugin("hello-world")["pid"], 0);
    let started: Value =
        serde_json::from_str(&ctl.ok(&["--json", "start", "hello-world"])).unwrap();
    assert_eq!(started["state"], "starting");

    let logs = ctl.ok(&["logs", "hello-world", "-n", "50"]);
    assert!(
        logs.contains("] hello-world@v0-2-1 serving gRPC on 127.0.0.1:"),
        "{logs}"
    );
    assert!(
        logs.contains("] hello-world@v0-2-1 shutting down"),
        "{logs}"
    );

    assert_eq!(
        ctl.fails(&["restart", "no-such-plugin"]),
        "corral: no plugin named `no-such-plugin`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_new_lines() {
    let (_database, _corral, ctl) = start().await;
    let mut follower = ctl
        .command(&["logs", "hello-world", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // The last past line arrives first: the follower is connected.
    let first = lines.recv_timeout(common::DEADLINE).unwrap();
    assert!(first.contains("hello-world@v0-2-1 serving gRPC"), "{first}");
    let restarted: Value =
        serde_json::from_str(&ctl.ok(&["--json", "restart", "hello-world"])).unwrap();
    let pid = restarted["pid"].as_u64().unwrap().to_string();
    let seen = std::iter::from_fn(|| lines.recv_timeout(common::DEADLINE).ok())
        .find(|line| line.contains(&format!(" [{pid} stdout] ")) && line.contains("serving gRPC"));
    // Each line begins with its time (UTC, RFC 3339).
    let seen = seen.unwrap();
    let (time, _) = seen.split_once(' ').unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{seen}");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_a_task_followed_to_its_end() {
    let (_database, corral, ctl) = start().await;
    let task_url = corral
        .submit("hello-world@v0-2-1", &[("inputStr", "my input")])
        .await;
    corral.finished(&task_url).await;
    let task_id = common::serve::task_id(&task_url);

    let shown = ctl.ok(&["task", &task_id]);
    assert!(shown.starts_with("status: SUCCESS\n"), "{shown}");
    assert!(shown.contains("output: out.txt http://"), "{shown}");
    assert!(shown.contains("log:\nresult: 'my output'"), "{shown}");
    assert_eq!(
        ctl.fails(&["task", "00000000000000000000000000000000"]),
        "corral: Task not found."
    );

    // Listing everyone's tasks needs the admin role: a token with it, or the
    // admin token a local operator can read.
    assert_eq!(
        ctl.without_admin_token().fails(&["tasks"]),
        "corral: the gateway refused the request (401): A bearer token is required."
    );
    assert!(ctl.ok(&["tasks"]).starts_with("TASK"));
    let token = common::token(SECRET, &["admin"]);
    let listed = ctl.without_admin_token().with_token(&token).ok(&["tasks"]);
    assert!(
        listed.lines().next().unwrap().starts_with("TASK"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&task_id) && line.contains("SUCCESS")),
        "{listed}"
    );
    let listed: Value =
        serde_json::from_str(&ctl.with_token(&token).ok(&["--json", "tasks"])).unwrap();
    assert_eq!(listed["tasks"][0]["id"], task_id);
    assert_eq!(listed["tasks"][0]["plugin"], "hello-world@v0-2-1");

    // --follow streams a multi-step task until it ends.
    let task_url = corral
        .submit("hello-world-multi-step@v0-2-1", &[("inputStr", "followed")])
        .await;
    let task_id = common::serve::task_id(&task_url);
    let follower = ctl
        .command(&["task", &task_id, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    corral.wait_for_step(&task_url).await;
    let (_, status) = corral.get_json(&task_url).await;
    let (code, _, _) = corral
        .post_form(
            status["steps"][0]["href"].as_str().unwrap(),
            &[("inputStr", "second")],
        )
        .await;
    assert_eq!(code, 303);
    let output = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let last = printed.lines().last().unwrap();
    assert_eq!(last, "status: SUCCESS", "{printed}");
    assert!(
        printed
            .lines()
            .filter(|line| line.starts_with("output: output"))
            .count()
            == 2,
        "{printed}"
    );
}

#[test]
fn servers_that_are_down_give_one_clear_line() {
    let ctl = Ctl {
        supervisor: "http://127.0.0.1:9".into(),
        gateway: "http://127.0.0.1:9".into(),
        token: None,
        admin_token: true,
    };
    let line = ctl.fails(&["plugins"]);
    assert!(
        line.starts_with("corral: cannot reach the supervisor at http://127.0.0.1:9"),
        "{line}"
    );
    let line = ctl.fails(&["task", "00000000000000000000000000000000"]);
    assert!(
        line.starts_with("corral: cannot reach the gateway at http://127.0.0.1:9"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_gives_one_clear_line() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve_with(
        &database,
        &[&plugins()],
        &[
            "--jwt-secret-file",
            &database.secret_file(SECRET),
            "--require-auth",
        ],
    );
    let ctl = Ctl {
        supervisor: format!("http://{}", corral.grpc.as_ref().unwrap()),
        gateway: corral.http.clone(),
        token: None,
        admin_token: true,
    };
    assert_eq!(
        ctl.without_admin_token().fails(&["tasks"]),
        "corral: the gateway refused the request (401): A bearer token is required."
    );
    assert_eq!(
        ctl.with_token("not-a-token").fails(&["tasks"]),
        "corral: the gateway refused the request (401): Invalid token: it cannot be read."
    );
    let token = common::token(SECRET, &[]);
    assert_eq!(
        ctl.with_token(&token).fails(&["tasks"]),
        "corral: the gateway refused the request (403): The token lacks the `admin` role."
    );
}

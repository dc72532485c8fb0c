//! The supervisor keeping plugins alive: restarts, crash loops, start timeouts,
//! stops, its own death, bad manifests, duplicates and versions side by side.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    PluginFolders, Supervisor, alive, built, eventually, group_members, reference_plugins,
    versioned_manifest,
};
use corral_proto::supervisor::v1::{ListPluginsRequest, PluginRef, PluginState};
use nix::sys::signal::Signal;

fn hello_world_manifest(extra: &str) -> String {
    format!(
        "command = {:?}\n{extra}\n",
        built("corral-plugin-hello-world").display().to_string()
    )
}

fn plugin(name: &str) -> PluginRef {
    PluginRef {
        plugin: name.into(),
    }
}

#[tokio::test]
async fn a_killed_plugin_is_back_and_healthy_with_a_new_pid() {
    let folders = PluginFolders::new();
    folders.add(
        "hello",
        &hello_world_manifest("[restart]\nbackoff_initial = \"0s\""),
    );
    let supervisor = Supervisor::start(&[folders.path()]);
    let before = supervisor.ready("hello").await;
    assert_eq!(before.restarts, 0);

    common::signal(before.pid, Signal::SIGKILL);
    let after = supervisor
        .wait_for("hello", "ready with a new pid", |status| {
            status.state == PluginState::Ready as i32 && status.pid != before.pid
        })
        .await;
    assert_eq!(after.restarts, 1);
    assert_eq!(after.last_exit_reason, "killed by SIGKILL");
    assert_eq!(after.identifier, "hello-world@v0-2-1");
    assert!(!alive(before.pid));
}

#[tokio::test]
async fn a_plugin_that_crashes_at_once_ends_failed_and_an_operator_can_start_it() {
    let folders = PluginFolders::new();
    let crashing = r#"
        command = "/bin/sh"
        args = ["-c", "echo about to crash; exit 3"]
        [restart]
        backoff_initial = "0s"
        backoff_max = "10ms"
        max_restarts = 3
        restart_window = "1m"
    "#;
    folders.add("crasher", crashing);
    let supervisor = Supervisor::start(&[folders.path()]);
    let failed = supervisor
        .wait_for("crasher", "failed", |status| {
            status.state == PluginState::Failed as i32
        })
        .await;
    assert_eq!(failed.restarts, 3);
    assert_eq!(failed.last_exit_reason, "exited with code 3");
    assert_eq!(
        failed.error,
        "crash loop: 3 restarts within 1m; last exit: exited with code 3"
    );
    assert_eq!(failed.pid, 0);

    // The operator fixes the manifest and starts the plugin: it is read again.
    folders.add("crasher", &hello_world_manifest(""));
    let started = supervisor
        .admin()
        .await
        .start_plugin(plugin("crasher"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.state, PluginState::Starting as i32);
    assert_eq!(started.error, "");
    let ready = supervisor.ready("crasher").await;
    assert_eq!(ready.identifier, "hello-world@v0-2-1");
    assert_eq!(ready.restarts, 4);
}

#[tokio::test]
async fn a_plugin_that_never_registers_is_restarted_after_its_start_timeout() {
    let folders = PluginFolders::new();
    folders.add(
        "silent",
        r#"
        command = "/bin/sleep"
        args = ["300"]
        start_timeout = "300ms"
        stop_grace = "100ms"
        [restart]
        backoff_initial = "0s"
        "#,
    );
    let supervisor = Supervisor::start(&[folders.path()]);
    let first = supervisor
        .wait_for("silent", "starting", |status| status.pid != 0)
        .await;
    let restarted = supervisor
        .wait_for("silent", "restarted", |status| {
            status.restarts >= 1 && status.pid != 0
        })
        .await;
    assert_ne!(restarted.pid, first.pid);
    assert_eq!(
        restarted.last_exit_reason,
        "did not register and become healthy within the start timeout (300ms)"
    );
    assert!(!alive(first.pid));
}

#[tokio::test]
async fn stop_leaves_no_process_of_the_plugin_group_even_when_it_ignores_sigterm() {
    let folders = PluginFolders::new();
    folders.add(
        "stubborn",
        r#"
        command = "/bin/sh"
        args = ["-c", "trap '' TERM; sleep 300 & sleep 300 & wait"]
        start_timeout = "5m"
        stop_grace = "200ms"
        "#,
    );
    let supervisor = Supervisor::start(&[folders.path()]);
    let running = supervisor
        .wait_for("stubborn", "starting", |status| status.pid != 0)
        .await;
    eventually("the plugin forked two children", || {
        group_members(running.pid).len() == 3
    })
    .await;

    let stopped = supervisor
        .admin()
        .await
        .stop_plugin(plugin("stubborn"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, PluginState::Stopped as i32);
    assert_eq!(stopped.pid, 0);
    assert_eq!(
        stopped.last_exit_reason,
        "stopped by operator (killed by SIGKILL)"
    );
    eventually("no process of the group is left", || {
        group_members(running.pid).is_empty()
    })
    .await;

    // A plugin that handles SIGTERM ends gracefully within the grace period.
    let folders = PluginFolders::new();
    folders.add("hello", &hello_world_manifest(""));
    let supervisor = Supervisor::start(&[folders.path()]);
    let ready = supervisor.ready("hello").await;
    let stopped = supervisor
        .admin()
        .await
        .stop_plugin(plugin("hello"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stopped.last_exit_reason,
        "stopped by operator (exited with code 0)"
    );
    assert!(group_members(ready.pid).is_empty());
    // Stopping again is harmless.
    let again = supervisor
        .admin()
        .await
        .stop_plugin(plugin("hello"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, PluginState::Stopped as i32);
}

#[tokio::test]
async fn killing_the_supervisor_with_sigkill_leaves_no_plugin_process() {
    let mut supervisor = Supervisor::start(&[&reference_plugins()]);
    let mut pids = Vec::new();
    for name in [
        "hello-world",
        "hello-world-multi-step",
        "file-upload",
        "json-visualization",
        "csv-visualization",
        "manual-classification",
    ] {
        pids.push(supervisor.ready(name).await.pid);
    }
    supervisor.child.kill().unwrap();
    supervisor.child.wait().unwrap();
    eventually("every plugin process died with the supervisor", || {
        pids.iter().all(|pid| !alive(*pid))
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_every_plugin_and_exits_zero() {
    let mut supervisor = Supervisor::start(&[&reference_plugins()]);
    let hello = supervisor.ready("hello-world").await;
    let csv = supervisor.ready("csv-visualization").await;
    let status = supervisor.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(!alive(hello.pid) && !alive(csv.pid));
}

#[tokio::test]
async fn a_bad_manifest_is_reported_with_its_file_and_field_while_the_others_run() {
    let folders = PluginFolders::new();
    folders.add("good", &hello_world_manifest(""));
    folders.add(
        "jittery",
        "command = \"x\"\n[restart]\nbackoff_jitter = 5.0\n",
    );
    folders.add("typo", "comand = \"x\"\n");
    let supervisor = Supervisor::start(&[folders.path()]);
    supervisor.ready("good").await;

    let plugins = supervisor
        .admin()
        .await
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    let names: Vec<&str> = plugins
        .iter()
        .map(|status| status.plugin.as_str())
        .collect();
    assert_eq!(names, ["good", "jittery", "typo"]);
    let jittery = &plugins[1];
    assert_eq!(jittery.state, PluginState::Failed as i32);
    let manifest = folders.path().join("jittery/plugin.toml");
    assert_eq!(
        jittery.error,
        format!(
            "invalid manifest {}: field `restart.backoff_jitter`: must be between 0 and 1",
            manifest.display()
        )
    );
    let typo = &plugins[2];
    assert!(typo.error.contains("typo/plugin.toml"), "{}", typo.error);
    assert!(
        typo.error.contains("unknown field `comand`"),
        "{}",
        typo.error
    );

    let logged = supervisor.stderr();
    assert!(logged.contains("restart.backoff_jitter"), "{logged}");
    assert!(logged.contains("unknown field `comand`"), "{logged}");

    let refused = supervisor
        .admin()
        .await
        .start_plugin(plugin("typo"))
        .await
        .expect_err("still invalid");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("comand"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_duplicate_identifier_is_refused_and_versions_run_side_by_side() {
    let folders = PluginFolders::new();
    folders.add("echo-v1", &versioned_manifest("echo", "v1.0.0", ""));
    folders.add("echo-v2", &versioned_manifest("echo", "v2.0.0", ""));
    folders.add("echo-v2-again", &versioned_manifest("echo", "v2.0.0", ""));
    let supervisor = Supervisor::start(&[folders.path()]);

    let v1 = supervisor.ready("echo-v1").await;
    assert_eq!(v1.identifier, "echo@v1-0-0");
    let settled = |status: &corral_proto::supervisor::v1::PluginStatus| {
        status.state == PluginState::Ready as i32 || status.state == PluginState::Failed as i32
    };
    let first = supervisor.wait_for("echo-v2", "settled", settled).await;
    let second = supervisor
        .wait_for("echo-v2-again", "settled", settled)
        .await;
    let (ready, refused) = if first.state == PluginState::Ready as i32 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ready.state, PluginState::Ready as i32);
    assert_eq!(ready.identifier, "echo@v2-0-0");
    assert_eq!(refused.state, PluginState::Failed as i32);
    assert_eq!(
        refused.error,
        format!(
            "identifier `echo@v2-0-0` is already served by plugin `{}`",
            ready.plugin
        )
    );
    // Both versions answer by identifier.
    assert_eq!(supervisor.status("echo@v1-0-0").await.plugin, "echo-v1");
    assert_eq!(supervisor.status("echo@v2-0-0").await.plugin, ready.plugin);
}

#[tokio::test]
async fn a_plugin_that_stops_answering_health_checks_is_restarted() {
    let folders = PluginFolders::new();
    folders.add(
        "frozen",
        &hello_world_manifest(
            "stop_grace = \"100ms\"\n[health]\ninterval = \"50ms\"\ntimeout = \"50ms\"\nfailures = 2\n\
             [restart]\nbackoff_initial = \"0s\"",
        ),
    );
    let supervisor = Supervisor::start(&[folders.path()]);
    let before = supervisor.ready("frozen").await;
    // A stopped process keeps its socket open but answers nothing.
    common::signal(before.pid, Signal::SIGSTOP);
    let after = supervisor
        .wait_for("frozen", "ready again", |status| {
            status.state == PluginState::Ready as i32 && status.pid != before.pid
        })
        .await;
    assert_eq!(
        after.last_exit_reason,
        "health check failed 2 times in a row"
    );
    assert_eq!(after.restarts, 1);
    assert!(!alive(before.pid));
}

#[tokio::test]
async fn a_plugin_sees_only_its_scrubbed_environment_and_its_limits() {
    let folders = PluginFolders::new();
    folders.add(
        "inspector",
        r#"
        command = "/bin/sh"
        args = ["-c", "echo open_files=$(ulimit -n); env | sort; echo done; exec sleep 300"]
        env_allow = ["ALLOWED_VAR", "NOT_SET_ANYWHERE"]
        start_timeout = "5m"
        [env]
        GREETING = "hello"
        [limits]
        open_files = 64
        "#,
    );
    let supervisor = Supervisor::start_with_env(
        &[folders.path()],
        &[
            ("ALLOWED_VAR", "passed"),
            ("DATABASE_URL", "postgres://secret"),
        ],
    );
    let lines = supervisor
        .log_lines_until("inspector", |line| line == "done")
        .await;
    assert_eq!(lines[0], "open_files=64");
    let names: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        // Set by the shell itself.
        .filter(|name| !matches!(*name, "PWD" | "OLDPWD" | "SHLVL" | "_"))
        .collect();
    assert_eq!(
        names,
        [
            "ALLOWED_VAR",
            "CORRAL_PLUGIN_NAME",
            "CORRAL_PLUGIN_TOKEN",
            "CORRAL_PROTOCOL_VERSION",
            "CORRAL_REGISTRY",
            "GREETING",
            "TMPDIR",
        ]
    );
    assert!(lines.contains(&"CORRAL_PLUGIN_NAME=inspector".to_string()));
    // Its private temporary folder (it is confined to it), owner-only.
    let temporary = lines
        .iter()
        .find_map(|line| line.strip_prefix("TMPDIR="))
        .unwrap();
    assert!(temporary.ends_with("/inspector"), "{temporary}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(temporary).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(lines.contains(&format!("CORRAL_REGISTRY={}", supervisor.url())));
    let token = lines
        .iter()
        .find_map(|line| line.strip_prefix("CORRAL_PLUGIN_TOKEN="))
        .unwrap();
    assert!(token.len() >= 64, "the token is long and random: {token}");
}

#[tokio::test]
async fn with_a_plugin_host_plugins_listen_everywhere_and_register_under_that_name() {
    let folders = PluginFolders::new();
    folders.add("hello", &hello_world_manifest(""));
    let supervisor =
        Supervisor::start_with(&[folders.path()], &[], &["--plugin-host", "localhost"]);
    let ready = supervisor.ready("hello").await;
    let port = ready
        .endpoint
        .strip_prefix("http://localhost:")
        .unwrap_or_else(|| panic!("{}", ready.endpoint));
    // It listens on every interface, not only on loopback.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{:04X}", port.parse::<u16>().unwrap());
    assert!(
        listening
            .lines()
            .any(|line| line.contains(&format!("00000000{hex_port}"))),
        "port {port} not bound to 0.0.0.0"
    );
}

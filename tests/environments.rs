//! Plugin environments built by Corral: a Python plugin's `.venv` is made from
//! its lock before it starts, once; a plugin whose install fails is failed with
//! the installer's error and harms no other.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{PluginFolders, Supervisor, repo, versioned_manifest};
use corral_proto::supervisor::v1::{PluginRef, PluginState};

const PYTHON_MANIFEST: &str = "command = \".venv/bin/python\"\nargs = [\"plugin.py\"]\n\
                               environment = \"uv\"\nstart_timeout = \"20s\"\n";

/// A copy of the csv-visualization plugin under `root/plugins`, its SDK path
/// dependency (`../../sdk-python`) pointing at the repository's SDK.
fn python_plugin_copy(root: &Path) -> std::path::PathBuf {
    std::os::unix::fs::symlink(repo().join("sdk-python"), root.join("sdk-python")).unwrap();
    let folder = root.join("plugins/csv-visualization");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["plugin.toml", "plugin.py", "pyproject.toml", "uv.lock"] {
        std::fs::copy(
            repo().join("plugins/csv-visualization").join(file),
            folder.join(file),
        )
        .unwrap();
    }
    root.join("plugins")
}

#[tokio::test]
async fn the_supervisor_builds_a_python_plugins_environment_once_then_starts_it() {
    let root = tempfile::tempdir().unwrap();
    let plugins = python_plugin_copy(root.path());
    let supervisor = Supervisor::start(&[&plugins]);

    let ready = supervisor.ready("csv-visualization").await;
    assert_eq!(ready.identifier, "csv-visualization@v0-1-0");
    let lines = supervisor
        .log_lines_until("csv-visualization", |line| line.contains("serving gRPC"))
        .await;
    assert!(
        lines[0].starts_with("building the environment: ")
            && lines
                .iter()
                .any(|line| line.starts_with("environment built in ")),
        "{lines:#?}"
    );
    assert!(plugins.join("csv-visualization/.venv/bin/python").is_file());

    // A restart finds the environment matching its lock: nothing is installed.
    let mut admin = supervisor.admin().await;
    admin
        .restart_plugin(PluginRef {
            plugin: "csv-visualization".into(),
        })
        .await
        .unwrap();
    let again = supervisor.ready("csv-visualization").await;
    assert_ne!(again.pid, ready.pid);
    let lines = supervisor
        .log_lines_until("csv-visualization", |line| {
            line.contains("serving gRPC") && line.contains(&again.endpoint.replace("http://", ""))
        })
        .await;
    let building = lines
        .iter()
        .filter(|line| line.starts_with("building the environment"))
        .count();
    assert_eq!(building, 1, "{lines:#?}");
}

#[tokio::test]
async fn a_failed_install_fails_only_its_plugin_with_the_installers_error() {
    let folders = PluginFolders::new();
    folders.add("broken", PYTHON_MANIFEST);
    std::fs::write(
        folders.path().join("broken/pyproject.toml"),
        "[project]\nname = \"broken\"\nversion = \"0.1.0\"\nrequires-python = \">=3.10\"\n",
    )
    .unwrap();
    std::fs::write(
        folders.path().join("broken/uv.lock"),
        "this is not a lock\n",
    )
    .unwrap();
    folders.add("unlocked", PYTHON_MANIFEST);
    std::fs::write(
        folders.path().join("unlocked/pyproject.toml"),
        "[project]\nname = \"unlocked\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    folders.add("healthy", &versioned_manifest("healthy", "v1.0.0", ""));
    let supervisor = Supervisor::start(&[folders.path()]);

    supervisor.ready("healthy").await;
    let broken = supervisor
        .wait_for("broken", "failed", |status| {
            status.state == PluginState::Failed as i32
        })
        .await;
    assert!(
        broken
            .error
            .starts_with("environment build failed: uv sync failed (exit status: 2): "),
        "{}",
        broken.error
    );
    assert_eq!(broken.pid, 0, "nothing was spawned");
    let lines = supervisor
        .log_lines_until("broken", |line| {
            line.starts_with("environment build failed")
        })
        .await;
    assert!(
        lines.iter().any(|line| line.contains("uv.lock")),
        "the installer's own lines are in the plugin's logs: {lines:#?}"
    );

    let unlocked = supervisor
        .wait_for("unlocked", "failed", |status| {
            status.state == PluginState::Failed as i32
        })
        .await;
    assert!(
        unlocked
            .error
            .contains("uv.lock is missing: run `uv lock` in"),
        "{}",
        unlocked.error
    );
    assert_eq!(
        supervisor.status("healthy").await.state,
        PluginState::Ready as i32
    );
}

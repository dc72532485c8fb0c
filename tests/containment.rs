//! What a hostile plugin can reach: not the supervisor's Admin API (it needs the
//! admin token, which plugins are never given).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{
    PluginFolders,
    serve::{Corral, Db, TestDatabase, serve_command},
    versioned_manifest,
};
use corral_proto::supervisor::v1::{ListPluginsRequest, admin_client::AdminClient};

const ROGUE: &str = "rogue@v1-0-0";
const ECHO: &str = "echo@v1-0-0";

fn folders() -> PluginFolders {
    let folders = PluginFolders::new();
    folders.add("rogue", &common::rogue_manifest());
    folders.add("echo", &versioned_manifest("echo", "v1.0.0", ""));
    folders
}

/// Runs the rogue plugin with `inputs`; returns its task's log.
async fn rogue(corral: &Corral, inputs: &[(&str, &str)]) -> String {
    let task = corral.submit(ROGUE, inputs).await;
    let ended = corral.finished(&task).await;
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    ended["log"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_calling_the_admin_api_is_refused() {
    let folders = folders();
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&[ROGUE, ECHO]).await;

    let log = rogue(&corral, &[("mode", "admin"), ("target", "echo")]).await;
    assert!(log.contains("admin: Unauthenticated"), "{log}");
    // The target was not touched.
    let (status, _) = corral.get_json(&format!("/plugins/{ECHO}/")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_made_owner_only_and_required() {
    let folders = folders();
    let database = TestDatabase::new(Db::Sqlite).await;
    let mut command = serve_command(database.data_dir.path(), &[folders.path()]);
    command.env_remove("CORRAL_ADMIN_TOKEN");
    let corral = Corral::start_command(command);
    corral.wait_for_plugins(&[ROGUE, ECHO]).await;
    let url = format!("http://{}", corral.grpc.as_ref().unwrap());

    let path = database.data_dir.path().join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{path:?}");
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(token.len(), 64);

    // Without it: refused with UNAUTHENTICATED and a message saying why.
    let mut anonymous = AdminClient::connect(url.clone()).await.unwrap();
    let refused = anonymous
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("admin token"), "{refused:?}");

    // With it: answered (the gateway, in the same process, uses it too).
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = corral_proto::admin::AdminToken::new(&token).unwrap();
    let mut admin = corral_proto::admin::admin_api(channel, token);
    let plugins = admin
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(plugins.len(), 2);

    // `corral ctl` finds the token through the data dir.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "ctl",
            "--supervisor",
            &format!("http://{}", corral.grpc.as_ref().unwrap()),
        ])
        .arg("plugins")
        .env("CORRAL_DATA_DIR", database.data_dir.path())
        .env_remove("CORRAL_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains(ECHO), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_read_the_database_the_files_or_another_plugin() {
    let folders = folders();
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&[ROGUE, ECHO]).await;
    // Something in the file store: an output of a finished task.
    let task = corral.submit(ECHO, &[("text", "secret output")]).await;
    assert_eq!(corral.finished(&task).await["status"], "SUCCESS");

    let data = database.data_dir.path();
    let forbidden = [
        data.join("corral.db"),
        data.join("files"),
        data.to_owned(),
        folders.path().join("echo"),
        folders.path().join("echo/plugin.toml"),
        std::path::PathBuf::from("/root"),
    ];
    let own = folders.path().join("rogue/plugin.toml");
    let paths: Vec<String> = forbidden
        .iter()
        .chain([&own])
        .map(|path| path.display().to_string())
        .collect();
    let log = rogue(&corral, &[("mode", "read"), ("paths", &paths.join(","))]).await;
    for path in &forbidden {
        let line = format!("refused {}: ", path.display());
        assert!(
            log.contains(&line),
            "{} was readable:\n{log}",
            path.display()
        );
    }
    // Its own folder stays readable.
    assert!(log.contains(&format!("read {}: ", own.display())), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_run_as_the_plugin_user_when_corral_runs_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs plugins as another user, which needs root: run the tests as root"
    );
    // The user must reach the binaries: run copies from a folder it can read.
    let bin = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["corral", "examples/rogue"] {
        let from = common::built(name);
        let to = bin.path().join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
    }
    let folders = PluginFolders::new();
    std::fs::set_permissions(folders.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    folders.add(
        "rogue",
        &format!(
            "command = {:?}\n",
            bin.path().join("rogue").display().to_string()
        ),
    );
    std::fs::set_permissions(
        folders.path().join("rogue"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let database = TestDatabase::new(Db::Sqlite).await;
    let mut command = common::serve::serve_command_of(
        &bin.path().join("corral"),
        database.data_dir.path(),
        &[folders.path()],
    );
    command.args(["--plugin-user", "nobody"]);
    let corral = Corral::start_command(command);
    corral.wait_for_plugins(&[ROGUE]).await;
    let log = rogue(&corral, &[("mode", "whoami")]).await;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert!(log.contains(&format!("uid: {}", nobody.uid)), "{log}");
}

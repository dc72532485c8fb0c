//! Settings: flags over environment variables over the TOML file over defaults,
//! the old runner's variable names, and one-line errors for wrong values.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::serve::{Corral, Db, TestDatabase, plugins};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(config: &std::path::Path, env: &[(&str, String)], flags: &[String]) -> Corral {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(flags)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    Corral::start_command(command)
}

#[tokio::test]
async fn flags_beat_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    let (from_file, from_env, from_flag) = (free_port(), free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "http = \"127.0.0.1:{from_file}\"\ngrpc = \"127.0.0.1:0\"\nplugin_folders = [{:?}]\n\
             data_dir = {:?}\nshutdown_grace = \"1s\"\n",
            plugins().display().to_string(),
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    let file_only = serve(&config, &[], &[]);
    assert_eq!(file_only.http, format!("http://127.0.0.1:{from_file}"));
    assert!(dir.path().join("data/corral.db").is_file());
    drop(file_only);

    let env = [("CORRAL_HTTP", format!("127.0.0.1:{from_env}"))];
    let env_wins = serve(&config, &env, &[]);
    assert_eq!(env_wins.http, format!("http://127.0.0.1:{from_env}"));
    drop(env_wins);

    let flag = ["--http".to_string(), format!("127.0.0.1:{from_flag}")];
    let flag_wins = serve(&config, &env, &flag);
    assert_eq!(flag_wins.http, format!("http://127.0.0.1:{from_flag}"));
}

fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{args:?} should fail");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn wrong_settings_are_named_in_one_line_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(&config, "htp = \"127.0.0.1:1\"\n").unwrap();
    let config = config.to_str().unwrap();
    assert_eq!(
        fails(&["serve", "--config", config], &[]),
        format!("corral: config file {config}: unknown key `htp`")
    );
    assert_eq!(
        fails(
            &["serve"],
            &[("SQLALCHEMY_DATABASE_URI", "mysql://db/qhana")]
        ),
        "corral: invalid SQLALCHEMY_DATABASE_URI: `mysql` databases are not supported: give a PostgreSQL or SQLite URL"
    );
    // A secret on the command line would be in every user's `ps`.
    for secret in [
        &["serve", "--jwt-secret", "s3cret"][..],
        &["gateway", "--jwt-secret=s3cret"],
    ] {
        assert_eq!(
            fails(secret, &[]),
            "corral: --jwt-secret on the command line is visible to every local user (ps); \
             use --jwt-secret-file or CORRAL_JWT_SECRET"
        );
    }
    let empty = dir.path().join("empty-secret");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    assert_eq!(
        fails(&["serve", "--jwt-secret-file", empty], &[]),
        format!("corral: the JWT secret file {empty} is empty")
    );
    assert_eq!(
        fails(&["serve", "--require-auth"], &[]),
        "corral: --require-auth needs a JWT secret or a JWT public key"
    );
    assert_eq!(
        fails(
            &[
                "serve",
                "--database-url",
                "mysql://db/x",
                "--data-dir",
                dir.path().to_str().unwrap()
            ],
            &[]
        ),
        "corral: unsupported database URL `mysql://db/x`: expected postgres://… or sqlite:…"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_runners_database_variable_is_accepted() {
    let database = TestDatabase::new(Db::Postgres).await;
    let url = database.url.clone().unwrap();
    let sqlalchemy = url.replacen("postgres://", "postgresql+psycopg2://", 1);
    let mut command = common::serve::serve_command(database.data_dir.path(), &[&plugins()]);
    command
        .env("SQLALCHEMY_DATABASE_URI", &sqlalchemy)
        .env_remove("DATABASE_URL");
    let corral = Corral::start_command(command);
    corral.wait_for_plugins(&["hello-world@v0-2-1"]).await;
    let task_url = corral
        .submit("hello-world@v0-2-1", &[("inputStr", "old name")])
        .await;
    corral.finished(&task_url).await;
    // The task went to PostgreSQL, not to SQLite in the data folder.
    assert!(!database.data_dir.path().join("corral.db").exists());
    use sqlx::{Connection, Row};
    let mut connection = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tasks")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get("n");
    assert_eq!(count, 1);
}

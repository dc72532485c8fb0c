//! What production and hostile clients do to a gateway: a database that goes
//! away, idle and slow connections, bodies that do not say what their forms
//! require or are not UTF-8.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    relay::{Relay, through},
    serve::{Corral, Db, TestDatabase, plugins, serve_command},
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

const HELLO: &str = "hello-world@v0-2-1";
const MULTI: &str = "hello-world-multi-step@v0-2-1";

async fn ready(corral: &Corral) -> (u16, Value) {
    corral.get_json("/ready").await
}

/// POSTs `form` until it is taken, as a client honouring `Retry-After` does;
/// returns the Location. Each refusal must be a 503 with `Retry-After`.
async fn post_until_taken(corral: &Corral, path: &str, form: &[(&str, &str)]) -> String {
    for _ in 0..40 {
        let response = corral
            .client
            .post(corral.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            303 => {
                return response.headers()["location"].to_str().unwrap().to_owned();
            }
            503 => {
                let retry_after = response.headers()["retry-after"].to_str().unwrap();
                let seconds: u64 = retry_after.parse().unwrap();
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            other => panic!(
                "{path}: unexpected {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    panic!("{path} was never taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_at_once_and_service_resumes_by_itself() {
    let database = TestDatabase::new(Db::Postgres).await;
    let direct = database.url.clone().unwrap();
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let relay = Relay::start(upstream).await;
    let mut command = serve_command(database.data_dir.path(), &[&plugins()]);
    command.args(["--database-url", &through(&direct, relay.address)]);
    let corral = Corral::start_command(command);
    corral.wait_for_plugins(&[HELLO, MULTI]).await;
    assert_eq!(ready(&corral).await.0, 200);

    let done = corral.submit(HELLO, &[("inputStr", "before")]).await;
    assert_eq!(corral.finished(&done).await["status"], "SUCCESS");
    let waiting = corral.submit(MULTI, &[("inputStr", "first")]).await;
    corral.wait_for_step(&waiting).await;
    let waiting_id = common::serve::task_id(&waiting);

    relay.cut();
    // A submission is refused at once with 503 and Retry-After, not held.
    let started = Instant::now();
    let (status, _, body) = corral
        .post_form(
            &format!("/plugins/{HELLO}/process/"),
            &[("inputStr", "during")],
        )
        .await;
    let took = started.elapsed();
    println!("time to 503 in an outage: {took:?}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 503);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // A step posted now is refused, not half taken.
    let step_path = format!("/plugins/{MULTI}/{waiting_id}/demo-step-process/");
    let (status, _, body) = corral
        .post_form(&step_path, &[("inputStr", "second")])
        .await;
    assert_eq!(status, 503, "{body}");
    // Readiness says why; liveness stays up; a finished task is still served.
    let (status, body) = ready(&corral).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["database"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    assert_eq!(body["supervisor"], "ok");
    assert_eq!(corral.get_json("/health").await.0, 200);
    let (status, task) = corral.get_json(&done).await;
    assert_eq!((status, task["status"].as_str()), (200, Some("SUCCESS")));

    relay.restore();
    // Back by itself: the step is taken once, the task ends, new tasks run.
    let location = post_until_taken(&corral, &step_path, &[("inputStr", "second")]).await;
    assert_eq!(location, waiting);
    let ended = corral.finished(&waiting).await;
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    assert_eq!(ended["outputs"].as_array().unwrap().len(), 2, "{ended}");
    let after = post_until_taken(
        &corral,
        &format!("/plugins/{HELLO}/process/"),
        &[("inputStr", "after")],
    )
    .await;
    assert_eq!(corral.finished(&after).await["status"], "SUCCESS");
    assert_eq!(ready(&corral).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_while_requests_are_answered() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve_with(&database, &[&plugins()], &["--header-timeout", "2s"]);
    corral.wait_for_plugins(&[HELLO]).await;
    let address = corral.http.trim_start_matches("http://").to_owned();

    // 1,000 connections that never send a byte, 50 that send a head slowly
    // (a byte at a time, never finishing it), and a kept-alive one left idle.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let mut kept = TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let read = kept.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));

    // Meanwhile requests are answered.
    let started = Instant::now();
    let (status, _) = corral.get_json("/plugins/").await;
    println!(
        "a request beside 1,051 idle connections: {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200);
    let task = corral.submit(HELLO, &[("inputStr", "busy")]).await;
    assert_eq!(corral.finished(&task).await["status"], "SUCCESS");

    // Each of them is closed by the server (end of stream, or a reset).
    let closed = |mut stream: TcpStream| async move {
        let mut buffer = [0u8; 512];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
                .await
                .expect("the connection was left open");
            match read {
                Ok(0) | Err(_) => return,
                // A slow head may get a 408 before the close.
                Ok(_) => continue,
            }
        }
    };
    let mut closing = JoinSet::new();
    for stream in idle.into_iter().chain(slow).chain([kept]) {
        closing.spawn(closed(stream));
    }
    let mut count = 0;
    while let Some(result) = closing.join_next().await {
        result.unwrap();
        count += 1;
    }
    assert_eq!(count, 1051);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_validated_like_a_submission() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral.wait_for_plugins(&[MULTI]).await;
    let task = corral.submit(MULTI, &[("inputStr", "first")]).await;
    corral.wait_for_step(&task).await;
    let path = format!(
        "/plugins/{MULTI}/{}/demo-step-process/",
        common::serve::task_id(&task)
    );
    // The step's field is required (prefilled in its form, but not sent).
    let (status, _, body) = corral.post_form(&path, &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"]["form"]["inputStr"][0],
        "Missing data for required field."
    );
    // Refused, so still waiting: a complete step is taken.
    let (status, location, body) = corral.post_form(&path, &[("inputStr", "second")]).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(location.as_deref(), Some(task.as_str()));
    assert_eq!(corral.finished(&task).await["status"], "SUCCESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_utf8_are_refused_with_the_json_error_body() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral.wait_for_plugins(&[HELLO]).await;
    let url = corral.url(&format!("/plugins/{HELLO}/process/"));
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };

    let typed = |content_type: &str, body: &[u8]| {
        corral
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_vec())
    };
    let urlencoded = "application/x-www-form-urlencoded";
    let (status, body) = send(typed(urlencoded, b"inputStr=caf%E9")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"]["form"]["inputStr"][0],
        "Not valid UTF-8 text."
    );

    let (status, body) = send(typed(urlencoded, b"input%FFStr=x")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 400);

    let part = reqwest::multipart::Part::bytes(vec![b'a', 0xff, b'b']);
    let form = reqwest::multipart::Form::new().part("inputStr", part);
    let (status, body) = send(corral.client.post(&url).multipart(form)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"]["form"]["inputStr"][0],
        "Not valid UTF-8 text."
    );

    let (status, body) = send(typed("application/json", b"{\"inputStr\": \"a\xffb\"}")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"]["json"]["_schema"][0], "Invalid JSON body.");

    // None of them made a task; text that is UTF-8 goes through as it is.
    use sqlx::Row;
    let mut connection = database.connect().await;
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tasks")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get("n");
    assert_eq!(count, 0);
    let task = corral.submit(HELLO, &[("inputStr", "café")]).await;
    let ended = corral.finished(&task).await;
    assert_eq!(ended["status"], "SUCCESS");
    assert!(ended["log"].as_str().unwrap().contains("café"), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_during_a_plugin_restart_is_taken_and_succeeds() {
    use corral_proto::supervisor::v1::{PluginRef, PluginState};
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral.wait_for_plugins(&[HELLO]).await;
    let grpc = format!("http://{}", corral.grpc.as_ref().unwrap());
    let mut admin = common::admin_client(&grpc).await;
    for round in 0..3 {
        let plugin = PluginRef {
            plugin: "hello-world".into(),
        };
        admin.restart_plugin(plugin).await.unwrap();
        // Submitted while its process is being replaced (it has no identifier
        // then): taken, and run once the new process is ready.
        common::watch_until(&grpc, "hello-world", "not ready", |status| {
            status.state != PluginState::Ready as i32
        })
        .await;
        let text = format!("round {round}");
        let task = corral.submit(HELLO, &[("inputStr", &text)]).await;
        let ended = corral.finished(&task).await;
        assert_eq!(ended["status"], "SUCCESS", "{ended}");
    }
}

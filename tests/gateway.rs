//! The REST contract end to end over HTTP: the real `corral` binary, real plugin
//! processes, and each test on both SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};

use common::serve::{Corral, Db, TestDatabase, plugins};
use serde_json::{Value, json};

on_both_databases!(
    hello_world_output_and_its_file,
    multi_step_outputs_progress_and_event_stream,
    file_upload_makes_the_file_its_output,
    file_secret_right_wrong_and_missing,
    webhooks_arrive_in_the_observed_order,
    invalid_requests_get_json_errors_and_create_no_task,
    plugin_list_metadata_and_redirects,
    hundred_concurrent_tasks_all_succeed,
    small_outputs_live_in_the_database_and_large_ones_in_the_file_store,
);

const HELLO: &str = "hello-world@v0-2-1";
const MULTI: &str = "hello-world-multi-step@v0-2-1";

async fn start(db: Db) -> (TestDatabase, Corral) {
    let database = TestDatabase::new(db).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral
        .wait_for_plugins(&[HELLO, MULTI, "file-upload@v0-2-0"])
        .await;
    (database, corral)
}

async fn hello_world_output_and_its_file(db: Db) {
    let (_database, corral) = start(db).await;
    let task_url = corral.submit(HELLO, &[("inputStr", "my input")]).await;
    assert!(task_url.starts_with(&corral.url("/tasks/")), "{task_url}");
    let status = corral.finished(&task_url).await;
    let output_href = status["outputs"][0]["href"].as_str().unwrap().to_owned();
    assert!(
        output_href.starts_with(&corral.url("/files/")),
        "{output_href}"
    );
    assert_eq!(
        status,
        json!({
            "status": "SUCCESS",
            "log": "result: 'my output'",
            "outputs": [{
                "href": output_href,
                "dataType": "custom/hello-world-output",
                "contentType": "text/plain",
                "name": "out.txt",
            }],
            "links": [{"type": "subscribe", "href": task_url}],
        })
    );
    let download = corral.client.get(&output_href).send().await.unwrap();
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(download.headers()["content-type"], "text/plain");
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"out.txt\"; filename*=UTF-8''out.txt"
    );
    assert_eq!(download.text().await.unwrap(), "my output");
}

async fn multi_step_outputs_progress_and_event_stream(db: Db) {
    let (_database, corral) = start(db).await;
    let task_url = corral.submit(MULTI, &[("inputStr", "input text")]).await;
    corral.wait_for_step(&task_url).await;

    let (_, status) = corral.get_json(&task_url).await;
    let step = &status["steps"][0];
    assert_eq!(status["status"], "PENDING");
    assert_eq!(
        status["progress"],
        json!({"value": 50, "start": 0, "target": 100, "unit": "%"})
    );
    assert_eq!(status["outputs"], json!([]));
    assert_eq!(step["stepId"], "demo-step");
    assert_eq!(step["cleared"], false);
    let task_id = common::serve::task_id(&task_url);
    assert_eq!(
        step["href"],
        corral.url(&format!("/plugins/{MULTI}/{task_id}/demo-step-process/"))
    );
    let page = corral.get_text(step["uiHref"].as_str().unwrap()).await;
    assert!(
        page.contains("value=\"Input from preprocessing: input text\""),
        "{page}"
    );

    // The stream of the rest of the task, from a client that connects now (the
    // step is submitted once it has its snapshot).
    let (connected, snapshot_seen) = tokio::sync::oneshot::channel::<()>();
    let stream = {
        let client = corral.client.clone();
        let url = task_url.clone();
        let connected = std::sync::Mutex::new(Some(connected));
        tokio::spawn(async move {
            common::serve::events_until(&client, &url, |name, _| {
                if let Some(connected) = connected.lock().unwrap().take() {
                    let _ = connected.send(());
                }
                name == "status"
            })
            .await
        })
    };
    snapshot_seen.await.unwrap();
    // The step form is submitted with its prefilled value unchanged.
    let (code, location, body) = corral
        .post_form(
            step["href"].as_str().unwrap(),
            &[("inputStr", "Input from preprocessing: input text")],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    assert_eq!(location.as_deref(), Some(task_url.as_str()));

    let status = corral.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS");
    assert_eq!(status["steps"][0]["cleared"], true);
    assert_eq!(status["progress"]["value"], 100);
    let mut texts = Vec::new();
    for output in status["outputs"].as_array().unwrap() {
        let text = corral.get_text(output["href"].as_str().unwrap()).await;
        texts.push((output["name"].as_str().unwrap().to_owned(), text));
    }
    assert_eq!(
        texts,
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

    let events = stream.await.unwrap();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["snapshot", "progress", "output", "output", "status"]
    );
    assert_eq!(events[0].1["steps"][0]["cleared"], false);
    assert_eq!(events[1].1["value"], 100);
    assert_eq!(events[2].1["name"], "output1.txt");
    assert_eq!(events[4].1, json!({"status": "SUCCESS"}));

    // Submitting the step again is refused and changes nothing.
    let (code, _, body) = corral
        .post_form(step["href"].as_str().unwrap(), &[("inputStr", "again")])
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body,
        json!({"code": 409, "status": "Conflict", "message": "This step was already submitted."})
    );
}

async fn file_upload_makes_the_file_its_output(db: Db) {
    let (_database, corral) = start(db).await;
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"id,name\n1,a\n".to_vec())
                .file_name("entities.csv")
                .mime_str("text/csv")
                .unwrap(),
        )
        .text("dataType", "entity/list")
        .text("contentType", "text/csv");
    let response = corral
        .client
        .post(corral.url("/plugins/file-upload@v0-2-0/process/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let task_url = response.headers()["location"].to_str().unwrap().to_owned();
    let status = corral.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS");
    assert_eq!(status["log"], "");
    let output = &status["outputs"][0];
    assert_eq!(status["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(output["name"], "entities.csv");
    assert_eq!(output["dataType"], "entity/list");
    assert_eq!(output["contentType"], "text/csv");
    let bytes = corral
        .client
        .get(output["href"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"id,name\n1,a\n");
}

async fn file_secret_right_wrong_and_missing(db: Db) {
    let (_database, corral) = start(db).await;
    let task_url = corral.submit(HELLO, &[("inputStr", "secret input")]).await;
    let status = corral.finished(&task_url).await;
    let href = status["outputs"][0]["href"].as_str().unwrap();
    let (path, secret) = href.split_once("?file-id=").unwrap();
    assert_eq!(secret.len(), 32);
    let right = corral.client.get(href).send().await.unwrap();
    assert_eq!(right.status().as_u16(), 200);
    let wrong = corral
        .client
        .get(format!("{path}?file-id={}", "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 404);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"code": 404, "status": "Not Found", "message": "File not found."})
    );
    let missing = corral.client.get(path).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 422);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"code": 422, "status": "Unprocessable Entity",
               "errors": {"query": {"file-id": ["Missing data for required field."]}}})
    );
}

async fn webhooks_arrive_in_the_observed_order(db: Db) {
    // The fixture plugin reads the gate URL before asking for its step, so the
    // subscription is in place before anything happens.
    let folders = common::PluginFolders::new();
    folders.add("gated", &common::versioned_manifest("gated", "v1.0.0", ""));
    let database = TestDatabase::new(db).await;
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["gated@v1-0-0"]).await;

    // A real HTTP receiver on loopback records what it is told, and holds the gate.
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (notify, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = Arc::new(tokio::sync::Notify::new());
    let sink = received.clone();
    let opened = gate.clone();
    type Query = axum::extract::Query<std::collections::HashMap<String, String>>;
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move |axum::extract::Query(query): Query| {
                let sink = sink.clone();
                let notify = notify.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push((query["event"].clone(), query["source"].clone()));
                    let _ = notify.send(());
                    "ok"
                }
            }),
        )
        .route(
            "/gate",
            axum::routing::get(move || {
                let opened = opened.clone();
                async move {
                    opened.notified().await;
                    "go"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let hook = format!("{receiver}/hook");

    let task_url = corral
        .submit(
            "gated@v1-0-0",
            &[("gate", &format!("{receiver}/gate")), ("step", "true")],
        )
        .await;
    let response = corral
        .client
        .post(&task_url)
        .json(&json!({"command": "subscribe", "webhookHref": hook, "event": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["links"][0]["href"],
        task_url
    );
    // A duplicate subscription is ignored.
    corral
        .client
        .post(&task_url)
        .json(&json!({"command": "subscribe", "webhookHref": hook}))
        .send()
        .await
        .unwrap();
    gate.notify_one();

    async fn wait_for(
        received: &Mutex<Vec<(String, String)>>,
        notified: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
        count: usize,
    ) {
        while received.lock().unwrap().len() < count {
            tokio::time::timeout(common::DEADLINE, notified.recv())
                .await
                .expect("webhook not delivered")
                .unwrap();
        }
    }
    wait_for(&received, &mut notified, 2).await;
    let (_, status) = corral.get_json(&task_url).await;
    let step_href = status["steps"][0]["href"].as_str().unwrap().to_owned();
    let (code, _, body) = corral.post_form(&step_href, &[("answer", "yes")]).await;
    assert_eq!(code, 303, "{body}");
    wait_for(&received, &mut notified, 5).await;
    let received = received.lock().unwrap().clone();
    let events: Vec<&str> = received.iter().map(|(event, _)| event.as_str()).collect();
    assert_eq!(events, ["steps", "details", "steps", "status", "details"]);
    assert!(
        received.iter().all(|(_, source)| *source == task_url),
        "{received:?}"
    );
    let status = corral.finished(&task_url).await;
    assert_eq!(status["log"], "confirmed: yes\nv1.0.0 says: ");
}

async fn invalid_requests_get_json_errors_and_create_no_task(db: Db) {
    let (database, corral) = start(db).await;
    let (code, _, body) = corral
        .post_form(&format!("/plugins/{HELLO}/process/"), &[("other", "x")])
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        body,
        json!({"code": 422, "status": "Unprocessable Entity",
               "errors": {"form": {"inputStr": ["Missing data for required field."]}}})
    );
    let response = corral
        .client
        .post(corral.url(&format!("/plugins/{HELLO}/process/")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errors"],
        json!({"json": {"_schema": ["Invalid JSON body."]}})
    );
    let response = corral
        .client
        .post(corral.url(&format!("/plugins/{HELLO}/process/")))
        .header("content-type", "text/plain")
        .body("inputStr=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);

    for (path, message) in [
        (
            "/tasks/00000000000000000000000000000000/",
            "Task not found.",
        ),
        ("/tasks/not-an-id/", "Task not found."),
        ("/plugins/nope@v1-0-0/", "Plugin not found."),
        ("/plugins/nope/", "Plugin not found."),
    ] {
        let (code, body) = corral.get_json(path).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            body,
            json!({"code": 404, "status": "Not Found", "message": message}),
            "{path}"
        );
    }
    let (code, _, body) = corral
        .post_form(
            &format!("/plugins/{MULTI}/00000000000000000000000000000000/demo-step-process/"),
            &[],
        )
        .await;
    assert_eq!((code, &body["message"]), (404, &json!("Step not found.")));

    let response = corral
        .client
        .get(corral.url("/plugins"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(response.headers()["location"], "/plugins/");
    let response = corral
        .client
        .get(corral.url(&format!("/plugins/{HELLO}/ui?inputStr=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("/plugins/{HELLO}/ui/?inputStr=x")
    );

    let response = corral
        .client
        .get(corral.url("//evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(response.headers()["location"], "/evil.example/");
    let (code, body) = corral.get_json("/files/x/?file-id=y&file-id=z").await;
    assert_eq!(code, 404, "{body}");

    let bad_subscription = corral
        .client
        .post(corral.url("/tasks/00000000000000000000000000000000/"))
        .json(&json!({"command": "subscribe", "webhookHref": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_subscription.status().as_u16(), 404);

    // No task was created by any of these.
    let task_url = corral.submit(HELLO, &[("inputStr", "counted")]).await;
    corral.finished(&task_url).await;
    let response = corral
        .client
        .post(&task_url)
        .json(&json!({"command": "listen", "webhookHref": "ftp://x", "event": "everything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errors"]["json"],
        json!({
            "command": ["Must be one of: subscribe, unsubscribe."],
            "event": ["Must be one of: status, steps, details."],
            "webhookHref": ["Not a valid URL."],
        })
    );
    assert_eq!(count_tasks(&database).await, 1);
}

async fn count_tasks(database: &TestDatabase) -> i64 {
    database.count("SELECT COUNT(*) AS n FROM tasks").await
}

async fn plugin_list_metadata_and_redirects(db: Db) {
    let (_database, corral) = start(db).await;
    corral
        .wait_for_plugins(&["csv-visualization@v0-1-0", "json-visualization@v0-1-0"])
        .await;
    let (code, body) = corral.get_json("/plugins/").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| plugin["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "csv-visualization",
            "file-upload",
            "hello-world",
            "hello-world-multi-step",
            "json-visualization",
            "manual-classification"
        ]
    );
    let hello = &body["plugins"][2];
    assert_eq!(
        hello,
        &json!({
            "name": "hello-world", "version": "v0.2.1", "identifier": HELLO,
            "apiRoot": corral.url(&format!("/plugins/{HELLO}/")),
            "description": hello["description"], "tags": ["hello-world", "demo"],
        })
    );
    let response = corral
        .client
        .get(corral.url("/plugins/hello-world/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    assert_eq!(response.headers()["location"], format!("/plugins/{HELLO}/"));

    let (code, metadata) = corral.get_json(&format!("/plugins/{HELLO}/")).await;
    assert_eq!(code, 200);
    assert_eq!(metadata["type"], "processing");
    assert_eq!(
        metadata["entryPoint"],
        json!({
            "href": format!("/plugins/{HELLO}/process/"),
            "uiHref": format!("/plugins/{HELLO}/ui/"),
            "pluginDependencies": [],
            "dataInput": [],
            "dataOutput": [{"dataType": "custom/hello-world-output", "contentType": ["text/plain"],
                            "required": true, "name": "out.txt"}],
        })
    );
    let (_, csv) = corral.get_json("/plugins/csv-visualization@v0-1-0/").await;
    assert_eq!(
        csv["entryPoint"]["dataInput"],
        json!([{"dataType": "*", "contentType": ["text/csv"], "required": true, "parameter": "data"}])
    );
    // The visualization's page shows its data.
    let page = corral
        .get_text("/plugins/csv-visualization@v0-1-0/ui/?data=data:text/csv,a,b%0A1,2")
        .await;
    assert!(page.contains("<td>1</td><td>2</td>"), "{page}");
    assert!(page.contains("data-input-type=\"data\""), "{page}");
    // POST to the form page re-renders it with inline errors, never a 4xx.
    let response = corral
        .client
        .post(corral.url(&format!("/plugins/{HELLO}/ui/")))
        .form(&[("inputStr", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Missing data for required field.")
    );
    let (code, root) = corral.get_json("/").await;
    assert_eq!((code, root["title"].is_string()), (200, true));

    // Any origin may read; preflights are answered.
    let preflight = corral
        .client
        .request(
            reqwest::Method::OPTIONS,
            corral.url(&format!("/plugins/{HELLO}/process/")),
        )
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let read = corral
        .client
        .get(corral.url("/plugins/"))
        .header("origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn forwarded_headers_shape_urls_only_when_the_proxies_are_trusted() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve_with(&database, &[&plugins()], &["--reverse-proxy-count", "1"]);
    corral.wait_for_plugins(&[HELLO]).await;
    let response = corral
        .client
        .get(corral.url("/plugins/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "qhana.example")
        .header("x-forwarded-prefix", "/runner")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let hello = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["identifier"] == HELLO)
        .unwrap();
    assert_eq!(
        hello["apiRoot"],
        format!("https://qhana.example/runner/plugins/{HELLO}/")
    );
    let response = corral
        .client
        .post(corral.url(&format!("/plugins/{HELLO}/process/")))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "qhana.example")
        .form(&[("inputStr", "proxied")])
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://qhana.example/tasks/"),
        "{location}"
    );

    // Without trusted proxies the same headers change nothing.
    let (database, plain) = start(Db::Sqlite).await;
    let response = plain
        .client
        .get(plain.url("/plugins/"))
        .header("x-forwarded-host", "qhana.example")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["plugins"][0]["apiRoot"]
            .as_str()
            .unwrap()
            .starts_with(&plain.http)
    );
    drop(database);
}

async fn hundred_concurrent_tasks_all_succeed(db: Db) {
    let (_database, corral) = start(db).await;
    let corral = Arc::new(corral);
    let runs = (0..100).map(|index| {
        let corral = corral.clone();
        tokio::spawn(async move {
            let input = format!("input {index}");
            let task_url = corral.submit(HELLO, &[("inputStr", &input)]).await;
            let status = corral.finished(&task_url).await;
            (index, status)
        })
    });
    for run in futures::future::join_all(runs).await {
        let (index, status) = run.unwrap();
        assert_eq!(status["status"], "SUCCESS", "{status}");
        assert_eq!(status["log"], format!("result: 'output {index}'"));
    }
}

#[tokio::test]
async fn api_spec_describes_every_route_and_its_viewer_is_local() {
    let (_database, corral) = start(Db::Sqlite).await;
    let (code, spec) = corral.get_json("/api-spec.json").await;
    assert_eq!(code, 200);
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );
    let paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/",
        "/plugins/",
        "/plugins/{plugin}/",
        "/plugins/{plugin}/ui/",
        "/plugins/{plugin}/process/",
        "/plugins/{plugin}/{task}/{step}/",
        "/tasks/{task}/",
        "/tasks/{task}/events",
        "/files/{file}/",
        "/admin/plugins/",
        "/admin/plugins/{plugin}/{action}/",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["TaskStatus"]["required"],
        json!(["status", "log", "outputs", "links"])
    );
    let process = &spec["paths"]["/plugins/{plugin}/process/"]["post"]["responses"];
    assert!(
        process.get("303").is_some() && process.get("422").is_some(),
        "{process}"
    );
    assert!(
        process["303"]["headers"].get("Location").is_some(),
        "{process}"
    );
    // Every operation has its own id (clients and Swagger UI tell them apart by
    // it) and says whether it needs a token (`{}`: open).
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: id `{id}` twice"
            );
            assert!(
                operation["security"].is_array(),
                "{method} {path}: no security"
            );
        }
    }
    assert_eq!(spec["paths"]["/ready"]["get"]["security"], json!([{}]));
    assert_eq!(
        spec["paths"]["/admin/tasks/"]["get"]["security"],
        json!([{"bearer": []}])
    );

    let viewer = corral
        .client
        .get(corral.url("/api-docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status().as_u16(), 200);
    let page = viewer.text().await.unwrap();
    assert!(
        page.contains("swagger-ui-bundle.js") && !page.contains("http"),
        "{page}"
    );
    let script = corral
        .client
        .get(corral.url("/api-docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript");
    assert!(script.bytes().await.unwrap().len() > 100_000);
}

/// An output up to 64 KiB is kept in its row; a larger one streams to the file
/// store: a folder on SQLite, the shared store in the database on PostgreSQL
/// (every gateway serves it). Both download whole, byte for byte.
async fn small_outputs_live_in_the_database_and_large_ones_in_the_file_store(db: Db) {
    let database = TestDatabase::new(db).await;
    let folders = common::PluginFolders::new();
    folders.add(
        "bulk",
        &format!(
            "command = {:?}\n",
            common::built("examples/bulk").display().to_string()
        ),
    );
    let corral = Corral::serve(&database, &[folders.path()]);
    corral.wait_for_plugins(&["bulk@v1-0-0"]).await;
    let on_disk = || {
        std::fs::read_dir(database.data_dir.path().join("files"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let in_database = || database.count("SELECT COUNT(*) AS n FROM file_blobs WHERE complete = 1");
    for (size, files_after) in [(100usize, 0), (3 * 1024 * 1024 + 5, 1)] {
        let size_text = size.to_string();
        let task_url = corral.submit("bulk@v1-0-0", &[("size", &size_text)]).await;
        let status = corral.finished(&task_url).await;
        assert_eq!(status["status"], "SUCCESS", "{status}");
        let href = status["outputs"][0]["href"].as_str().unwrap();
        let download = corral.client.get(href).send().await.unwrap();
        assert_eq!(download.status().as_u16(), 200);
        assert_eq!(
            download.headers()["content-length"],
            size_text.as_str(),
            "size {size}"
        );
        let bytes = download.bytes().await.unwrap();
        assert_eq!(bytes.len(), size);
        assert!(bytes.iter().all(|&byte| byte == b'x'), "size {size}");
        let (disk, shared) = match db {
            Db::Sqlite => (files_after, 0),
            Db::Postgres => (0, files_after as i64),
        };
        assert_eq!(on_disk(), disk, "files on disk after size {size}");
        assert_eq!(
            in_database().await,
            shared,
            "shared files after size {size}"
        );
    }
}

/// The shared file store keeps what a task references and sweeps away what
/// nothing references once it is old: a write a crash cut short, and an
/// upload no task took.
#[tokio::test]
async fn the_sweep_keeps_referenced_files_and_removes_old_leftovers() {
    let database = TestDatabase::new(Db::Postgres).await;
    let folders = common::PluginFolders::new();
    folders.add(
        "bulk",
        &format!(
            "command = {:?}\n",
            common::built("examples/bulk").display().to_string()
        ),
    );
    let corral = Corral::serve_with(&database, &[folders.path()], &["--sweep-every", "1s"]);
    corral.wait_for_plugins(&["bulk@v1-0-0"]).await;
    let size = (2 * 1024 * 1024 + 3).to_string();
    let task_url = corral.submit("bulk@v1-0-0", &[("size", &size)]).await;
    let status = corral.finished(&task_url).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    let href = status["outputs"][0]["href"].as_str().unwrap().to_owned();

    let mut connection = database.connect().await;
    for statement in [
        "INSERT INTO file_blobs (storage_key, size, complete, created_at) VALUES ('cutshort', 0, 0, 0)",
        "INSERT INTO file_chunks (storage_key, position, data) VALUES ('cutshort', 0, '\\x00'::bytea)",
        "INSERT INTO file_blobs (storage_key, size, complete, created_at) VALUES ('untaken', 1, 1, 0)",
        "INSERT INTO files (id, secret, task_id, kind, position, data_type, content_type, size, \
         storage_key, created_at) VALUES ('untakenupload', 's', NULL, 'input', 0, 'x', 'x', 1, 'untaken', 0)",
    ] {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    let leftovers =
        "SELECT COUNT(*) AS n FROM file_blobs WHERE storage_key IN ('cutshort', 'untaken')";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while database.count(leftovers).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "leftovers not swept away"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let chunks = "SELECT COUNT(*) AS n FROM file_chunks WHERE storage_key = 'cutshort'";
    assert_eq!(
        database.count(chunks).await,
        0,
        "the chunks go with their file"
    );
    let upload = "SELECT COUNT(*) AS n FROM files WHERE id = 'untakenupload'";
    assert_eq!(
        database.count(upload).await,
        0,
        "the untaken upload's row goes"
    );
    let download = corral.client.get(&href).send().await.unwrap();
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(download.bytes().await.unwrap().len().to_string(), size);
}

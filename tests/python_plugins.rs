//! The Python plugins through the gateway: the SDK's plugins and QHAna's
//! plugins ported to it, each in its own environment, over real gRPC and REST.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{
    plugin_selection,
    serve::{Corral, Db, TestDatabase},
};
use serde_json::Value;

fn python_plugins() -> std::path::PathBuf {
    plugin_selection(
        "python",
        &[
            "hello-world-python",
            "data-creator",
            "entity-filter",
            "manual-classification-py",
        ],
    )
}

/// The task's outputs by name: (data type, content type, body).
async fn outputs(corral: &Corral, task: &Value) -> BTreeMap<String, (String, String, String)> {
    let mut found = BTreeMap::new();
    for output in task["outputs"].as_array().unwrap() {
        let body = corral.get_text(output["href"].as_str().unwrap()).await;
        found.insert(
            output["name"].as_str().unwrap().to_owned(),
            (
                output["dataType"].as_str().unwrap().to_owned(),
                output["contentType"].as_str().unwrap().to_owned(),
                body,
            ),
        );
    }
    found
}

#[tokio::test]
async fn python_hello_world_runs_as_the_rust_one_does() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&python_plugins()]);
    corral
        .wait_for_plugins(&["hello-world-python@v0-2-1"])
        .await;
    let task = corral
        .submit("hello-world-python@v0-2-1", &[("inputStr", "my input")])
        .await;
    let finished = corral.finished(&task).await;
    assert_eq!(finished["status"], "SUCCESS", "{finished}");
    assert!(
        finished["log"]
            .as_str()
            .unwrap()
            .contains("result: 'my output'")
    );
    let outputs = outputs(&corral, &finished).await;
    assert_eq!(
        outputs["out.txt"],
        (
            "custom/hello-world-output".into(),
            "text/plain".into(),
            "my output".into()
        )
    );
}

#[tokio::test]
async fn the_data_creator_port_writes_its_four_datasets_and_its_validators_refuse() {
    let database = TestDatabase::new(Db::Postgres).await;
    let corral = Corral::serve(&database, &[&python_plugins()]);
    corral.wait_for_plugins(&["data-creator@v0-2-3"]).await;
    let task = corral
        .submit(
            "data-creator@v0-2-3",
            &[
                ("datasetType", "blobs"),
                ("numTrainPoints", "10"),
                ("numTestPoints", "5"),
                ("centers", "2"),
            ],
        )
        .await;
    let finished = corral.finished(&task).await;
    assert_eq!(finished["status"], "SUCCESS", "{finished}");
    let outputs = outputs(&corral, &finished).await;
    let kinds: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(name, (data_type, _, _))| (name.as_str(), data_type.as_str()))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    for (name, (data_type, content_type, body)) in &outputs {
        assert_eq!(content_type, "application/json", "{name}");
        let entities: Vec<Value> = serde_json::from_str(body).unwrap();
        let expected = if name.starts_with("train") { 10 } else { 5 };
        assert_eq!(entities.len(), expected, "{name}: {body}");
        assert!(
            data_type == "entity/vector" || data_type == "entity/label",
            "{name}: {data_type}"
        );
    }

    // The schema's own validators run in the plugin: the task ends with their words.
    let refused = corral
        .submit(
            "data-creator@v0-2-3",
            &[
                ("datasetType", "blobs"),
                ("numTrainPoints", "0"),
                ("numTestPoints", "5"),
                ("centers", "2"),
            ],
        )
        .await;
    let refused = corral.finished(&refused).await;
    assert_eq!(refused["status"], "FAILURE");
    assert!(
        refused["log"]
            .as_str()
            .unwrap()
            .contains("invalid inputs: numTrainPoints: Must be greater than or equal to 1."),
        "{refused}"
    );
}

#[tokio::test]
async fn the_entity_filter_port_keeps_the_chosen_rows_and_columns() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&python_plugins()]);
    corral.wait_for_plugins(&["entity-filter@v0-2-1"]).await;
    let entities = r#"data:application/json,[{"ID":"a","x":1,"y":2},{"ID":"b","x":3,"y":4},{"ID":"c","x":5,"y":6}]"#;
    let task = corral
        .submit(
            "entity-filter@v0-2-1",
            &[
                ("inputFileUrl", entities),
                ("attributes", "x"),
                ("attributeFilterStrategy", "ALLOWLIST"),
                ("nRows", "2"),
                ("rowSampling", "FIRST_N"),
            ],
        )
        .await;
    let finished = corral.finished(&task).await;
    assert_eq!(finished["status"], "SUCCESS", "{finished}");
    let outputs = outputs(&corral, &finished).await;
    let (name, (data_type, content_type, body)) = outputs.iter().next().unwrap();
    assert!(
        name.starts_with("filtered_entities_setting_Allowlist_rows_2"),
        "{name}"
    );
    assert_eq!(
        (data_type.as_str(), content_type.as_str()),
        ("entity_filter_output", "application/json")
    );
    assert_eq!(body, "[{\"ID\":\"a\",\"x\":1},{\"ID\":\"b\",\"x\":3}]\n");
}

#[tokio::test]
async fn the_manual_classification_port_loops_over_steps_through_the_gateway() {
    let database = TestDatabase::new(Db::Postgres).await;
    let corral = Corral::serve(&database, &[&python_plugins()]);
    corral
        .wait_for_plugins(&["manual-classification@v0-2-1"])
        .await;
    let task = corral
        .submit(
            "manual-classification@v0-2-1",
            &[(
                "inputFileUrl",
                r#"data:application/json,[{"ID":"a"},{"ID":"b"},{"ID":"c"}]"#,
            )],
        )
        .await;
    let classes = [
        ("cat", "a", "false"),
        ("dog", "b", "false"),
        ("cat", "c", "true"),
    ];
    for (round, (class, entity, done)) in classes.into_iter().enumerate() {
        let step_id = format!("annotate-class-{}", round + 1);
        let (_, status) = corral.get_json(&task).await;
        corral
            .events_until(&task, |name, data| {
                (name == "step" && data["stepId"] == step_id.as_str())
                    || (name == "snapshot"
                        && data["steps"].as_array().is_some_and(|steps| {
                            steps.iter().any(|step| {
                                step["stepId"] == step_id.as_str() && step["cleared"] == false
                            })
                        }))
            })
            .await;
        let (_, status_now) = corral.get_json(&task).await;
        let step = status_now["steps"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(step["stepId"], step_id.as_str(), "{status}");
        // The step's form offers a checkbox per entity.
        let form = corral.get_text(step["uiHref"].as_str().unwrap()).await;
        assert!(form.contains("name=\"classIdentifier\"") && form.contains("name=\"c\""));
        let (code, _, body) = corral
            .post_form(
                step["href"].as_str().unwrap(),
                &[("classIdentifier", class), (entity, "true"), ("done", done)],
            )
            .await;
        assert!(code < 400, "{code} {body}");
    }
    let finished = corral.finished(&task).await;
    assert_eq!(finished["status"], "SUCCESS", "{finished}");
    let outputs = outputs(&corral, &finished).await;
    let (data_type, content_type, body) = &outputs["classified_entities.json"];
    assert_eq!(
        (data_type.as_str(), content_type.as_str()),
        ("manual_classification_output", "application/json")
    );
    let classified: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        classified,
        serde_json::json!([
            {"ID": "a", "classification": ["cat"]},
            {"ID": "b", "classification": ["dog"]},
            {"ID": "c", "classification": ["cat"]},
        ])
    );
}

/// Two plugins whose requirements cannot share one environment (qiskit 0.43
/// and qiskit 2.x; `scripts/check-conflict` shows the resolver refusing their
/// union) run side by side in one `corral serve`, each on its own versions.
#[tokio::test]
async fn qiskit_043_and_qiskit_2_run_a_bell_circuit_side_by_side() {
    let plugins = plugin_selection("qiskit", &["qiskit-simulator", "qiskit-simulator-next"]);
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins]);
    let identifiers = ["qiskit-simulator@v1-0-1", "qiskit-simulator@v2-0-0"];
    corral.wait_for_plugins(&identifiers).await;
    let bell = "data:text/x-qasm,OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\n\
                h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";
    let mut tasks = Vec::new();
    for identifier in identifiers {
        tasks.push(
            corral
                .submit(identifier, &[("circuit", bell), ("shots", "200")])
                .await,
        );
    }
    let mut seen = Vec::new();
    for task in &tasks {
        let finished = corral.finished(task).await;
        assert_eq!(finished["status"], "SUCCESS", "{finished}");
        let outputs = outputs(&corral, &finished).await;
        let counts: Value = serde_json::from_str(&outputs["result-counts.json"].2).unwrap();
        let total: u64 = ["00", "11"]
            .iter()
            .map(|state| counts[state].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(total, 200, "only 00 and 11 are measured: {counts}");
        let versions: Value = serde_json::from_str(&outputs["versions.json"].2).unwrap();
        seen.push((
            versions["qiskit"].as_str().unwrap().to_owned(),
            versions["numpy"].as_str().unwrap().to_owned(),
        ));
    }
    let major = |version: &str| version.split('.').next().unwrap().to_owned();
    assert!(seen[0].0.starts_with("0.43"), "{seen:?}");
    assert_eq!(major(&seen[0].1), "1", "{seen:?}");
    assert_eq!(major(&seen[1].0), "2", "{seen:?}");
    assert_eq!(major(&seen[1].1), "2", "{seen:?}");
}

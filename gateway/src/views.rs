//! The JSON bodies of the REST contract, built from plugin metadata and task records.
//! This is the boundary between protobuf/database types and the contract's camelCase.

use corral_proto::plugin::v1::{self as pb, PluginType};
use serde_json::{Map, Value, json};

use crate::{
    store::{FileRecord, TaskRecord},
    urls::BaseUrl,
};

/// The contract's name of a plugin type.
pub(crate) fn plugin_type(kind: i32) -> &'static str {
    match PluginType::try_from(kind) {
        Ok(PluginType::Visualization) => "visualization",
        Ok(PluginType::Conversion) => "conversion",
        Ok(PluginType::Dataloader) => "dataloader",
        Ok(PluginType::Interaction) => "interaction",
        Ok(PluginType::Processing | PluginType::Unspecified) | Err(_) => "processing",
    }
}

/// One entry of `GET /plugins/`.
pub(crate) fn plugin_entry(
    identifier: &str,
    metadata: &pb::PluginMetadata,
    base: &BaseUrl,
) -> Value {
    json!({
        "name": metadata.name,
        "version": metadata.version,
        "identifier": identifier,
        "apiRoot": base.absolute(&format!("/plugins/{identifier}/")),
        "description": metadata.description,
        "tags": metadata.tags,
    })
}

/// `GET /plugins/<identifier>/`.
pub(crate) fn plugin_metadata(
    identifier: &str,
    metadata: &pb::PluginMetadata,
    base: &BaseUrl,
) -> Value {
    let data_inputs: Vec<Value> = metadata
        .data_inputs
        .iter()
        .map(|input| {
            json!({
                "dataType": input.data_type,
                "contentType": input.content_types,
                "required": input.required,
                "parameter": input.parameter,
            })
        })
        .collect();
    let data_outputs: Vec<Value> = metadata
        .data_outputs
        .iter()
        .map(|output| {
            let mut entry = json!({
                "dataType": output.data_type,
                "contentType": output.content_types,
                "required": output.required,
            });
            if let Some(name) = &output.name {
                entry["name"] = json!(name);
            }
            entry
        })
        .collect();
    let dependencies: Vec<Value> = metadata
        .plugin_dependencies
        .iter()
        .map(|dependency| {
            let mut entry = Map::new();
            entry.insert("parameter".into(), json!(dependency.parameter));
            entry.insert("required".into(), json!(dependency.required));
            if let Some(name) = &dependency.name {
                entry.insert("name".into(), json!(name));
            }
            if let Some(version) = &dependency.version {
                entry.insert("version".into(), json!(version));
            }
            if !dependency.tags.is_empty() {
                entry.insert("tags".into(), json!(dependency.tags));
            }
            if let Some(kind) = dependency.r#type {
                entry.insert("type".into(), json!(plugin_type(kind)));
            }
            Value::Object(entry)
        })
        .collect();
    let links: Vec<Value> = metadata
        .links
        .iter()
        .map(|link| json!({"type": link.r#type, "href": link.href}))
        .collect();
    json!({
        "title": metadata.title,
        "description": metadata.description,
        "name": metadata.name,
        "version": metadata.version,
        "type": plugin_type(metadata.r#type),
        "tags": metadata.tags,
        "links": links,
        "entryPoint": {
            "href": base.path(&format!("/plugins/{identifier}/process/")),
            "uiHref": base.path(&format!("/plugins/{identifier}/ui/")),
            "pluginDependencies": dependencies,
            "dataInput": data_inputs,
            "dataOutput": data_outputs,
        },
    })
}

/// `GET /tasks/<id>/`, with every rule of the contract.
pub(crate) fn task_status(task: &TaskRecord, base: &BaseUrl) -> Value {
    let task_url = base.absolute(&format!("/tasks/{}/", task.id));
    let mut body = Map::new();
    let status = task.status.map_or("UNKNOWN", |status| status.as_str());
    body.insert("status".into(), json!(status));
    body.insert("log".into(), json!(task.log));
    if let Some(progress) = task
        .progress
        .as_ref()
        .filter(|progress| progress.value != 0)
    {
        body.insert(
            "progress".into(),
            json!({
                "value": progress.value,
                "start": progress.start,
                "target": progress.target,
                "unit": progress.unit,
            }),
        );
    }
    if !task.steps.is_empty() {
        let steps: Vec<Value> = task
            .steps
            .iter()
            .map(|step| {
                let step_root = format!("/plugins/{}/{}/{}", task.plugin, task.id, step.step_id);
                json!({
                    "href": base.absolute(&format!("{step_root}-process/")),
                    "uiHref": base.absolute(&format!("{step_root}-ui/")),
                    "stepId": step.step_id,
                    "cleared": step.cleared,
                })
            })
            .collect();
        body.insert("steps".into(), Value::Array(steps));
    }
    let finished = task.finished_at.is_some();
    let outputs: Vec<Value> = if finished {
        task.outputs.iter().map(|file| output(file, base)).collect()
    } else {
        Vec::new()
    };
    body.insert("outputs".into(), Value::Array(outputs));
    body.insert(
        "links".into(),
        json!([{"type": "subscribe", "href": task_url}]),
    );
    Value::Object(body)
}

/// One output of a task status.
pub(crate) fn output(file: &FileRecord, base: &BaseUrl) -> Value {
    let mut entry = json!({
        "href": file_url(file, base),
        "dataType": file.data_type,
        "contentType": file.content_type,
    });
    if let Some(name) = &file.name {
        entry["name"] = json!(name);
    }
    entry
}

/// The download URL of a stored file, with its secret.
pub(crate) fn file_url(file: &FileRecord, base: &BaseUrl) -> String {
    base.absolute(&format!("/files/{}/?file-id={}", file.id, file.secret))
}

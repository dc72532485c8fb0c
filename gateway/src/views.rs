//! The JSON bodies of the REST contract, as typed structs: they are what the
//! handlers serialize and what the OpenAPI document describes. This is the
//! boundary between protobuf/database types and the contract's camelCase.

use corral_proto::plugin::v1::{self as pb, PluginType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    store::{FileRecord, TaskRecord},
    urls::BaseUrl,
};

/// `GET /`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Root {
    pub(crate) title: String,
}

/// `GET /plugins/`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginList {
    /// Ready plugins, sorted by name, then version.
    pub(crate) plugins: Vec<PluginEntry>,
}

/// One plugin of the list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PluginEntry {
    name: String,
    version: String,
    /// `name@version` with `.` replaced by `-`.
    identifier: String,
    /// Absolute URL of the plugin's metadata.
    api_root: String,
    description: String,
    tags: Vec<String>,
}

/// `GET /plugins/<identifier>/`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PluginMetadata {
    title: String,
    description: String,
    name: String,
    version: String,
    /// processing, visualization, conversion, dataloader or interaction.
    #[serde(rename = "type")]
    kind: &'static str,
    tags: Vec<String>,
    links: Vec<Link>,
    entry_point: EntryPoint,
}

/// How to run the plugin.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryPoint {
    /// The `process/` URL (root-relative).
    href: String,
    /// The micro-frontend URL (root-relative).
    ui_href: String,
    plugin_dependencies: Vec<PluginDependency>,
    data_input: Vec<DataInput>,
    data_output: Vec<DataOutput>,
}

/// A plugin this one calls.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PluginDependency {
    parameter: String,
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

/// A data input, received as a URL in the form field `parameter`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataInput {
    data_type: String,
    content_type: Vec<String>,
    required: bool,
    parameter: String,
}

/// A data output.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataOutput {
    data_type: String,
    content_type: Vec<String>,
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// A typed link.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Link {
    #[serde(rename = "type")]
    kind: String,
    href: String,
}

/// `GET /tasks/<id>/`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskStatus {
    /// PENDING, SUCCESS, FAILURE, or UNKNOWN.
    status: &'static str,
    /// The task log; `""` when empty.
    log: String,
    /// Omitted when its value is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    /// Omitted when the task has no steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<Step>>,
    /// `[]` until the task finishes.
    outputs: Vec<Output>,
    /// The subscribe link first.
    links: Vec<Link>,
}

/// One event of a task's stream (`GET /tasks/<id>/events`): the SSE event's
/// name is the variant's, its data the content. Every event is stored with its
/// task, in order, its position (from 1) being the SSE `id`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub(crate) enum TaskEvent {
    /// A line of the task log.
    Log(LogLine),
    /// The task's progress.
    Progress(Progress),
    /// The task waits for this step.
    Step(Step),
    /// An output file is complete (and can be fetched).
    Output(Output),
    /// The task ended; always the last event.
    Status(TaskEnd),
}

/// A line of a task's log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct LogLine {
    pub(crate) text: String,
}

/// How a task ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct TaskEnd {
    /// `SUCCESS` or `FAILURE`.
    pub(crate) status: String,
}

/// A task event as it is sent and stored: its SSE name and its data (JSON).
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    pub(crate) name: &'static str,
    pub(crate) data: String,
}

impl EncodedEvent {
    /// The stored form, `{"event": name, "data": data}`, the way
    /// [`TaskEvent`] deserializes.
    pub(crate) fn line(&self) -> String {
        let mut line = String::with_capacity(self.data.len() + self.name.len() + 20);
        line.push_str("{\"event\":\"");
        line.push_str(self.name);
        line.push_str("\",\"data\":");
        line.push_str(&self.data);
        line.push('}');
        line
    }
}

impl TaskEvent {
    /// The event's name and data, serialized once.
    pub(crate) fn encode(&self) -> EncodedEvent {
        let (name, data) = match self {
            Self::Log(line) => ("log", serde_json::to_string(line)),
            Self::Progress(progress) => ("progress", serde_json::to_string(progress)),
            Self::Step(step) => ("step", serde_json::to_string(step)),
            Self::Output(output) => ("output", serde_json::to_string(output)),
            Self::Status(end) => ("status", serde_json::to_string(end)),
        };
        EncodedEvent {
            name,
            data: data.expect("a task event always serializes: strings and integers only"),
        }
    }

    /// A log line.
    pub(crate) fn log(text: impl Into<String>) -> Self {
        Self::Log(LogLine { text: text.into() })
    }

    /// The end of a task.
    pub(crate) fn status(status: &str) -> Self {
        Self::Status(TaskEnd {
            status: status.to_owned(),
        })
    }
}

/// Progress of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Progress {
    pub(crate) value: i64,
    pub(crate) start: i64,
    pub(crate) target: i64,
    pub(crate) unit: String,
}

impl From<&crate::store::Progress> for Progress {
    fn from(progress: &crate::store::Progress) -> Self {
        Self {
            value: progress.value,
            start: progress.start,
            target: progress.target,
            unit: progress.unit.clone(),
        }
    }
}

/// A step of a multi-step task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Step {
    href: String,
    ui_href: String,
    step_id: String,
    cleared: bool,
}

/// An output file of a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Output {
    /// Absolute download URL, with its secret.
    href: String,
    data_type: String,
    content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

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
) -> PluginEntry {
    PluginEntry {
        name: metadata.name.clone(),
        version: metadata.version.clone(),
        identifier: identifier.to_owned(),
        api_root: base.absolute(&format!("/plugins/{identifier}/")),
        description: metadata.description.clone(),
        tags: metadata.tags.clone(),
    }
}

/// `GET /plugins/<identifier>/`.
pub(crate) fn plugin_metadata(
    identifier: &str,
    metadata: &pb::PluginMetadata,
    base: &BaseUrl,
) -> PluginMetadata {
    PluginMetadata {
        title: metadata.title.clone(),
        description: metadata.description.clone(),
        name: metadata.name.clone(),
        version: metadata.version.clone(),
        kind: plugin_type(metadata.r#type),
        tags: metadata.tags.clone(),
        links: metadata
            .links
            .iter()
            .map(|link| Link {
                kind: link.r#type.clone(),
                href: link.href.clone(),
            })
            .collect(),
        entry_point: EntryPoint {
            href: base.path(&format!("/plugins/{identifier}/process/")),
            ui_href: base.path(&format!("/plugins/{identifier}/ui/")),
            plugin_dependencies: metadata
                .plugin_dependencies
                .iter()
                .map(|dependency| PluginDependency {
                    parameter: dependency.parameter.clone(),
                    required: dependency.required,
                    name: dependency.name.clone(),
                    version: dependency.version.clone(),
                    tags: dependency.tags.clone(),
                    kind: dependency.r#type.map(plugin_type),
                })
                .collect(),
            data_input: metadata
                .data_inputs
                .iter()
                .map(|input| DataInput {
                    data_type: input.data_type.clone(),
                    content_type: input.content_types.clone(),
                    required: input.required,
                    parameter: input.parameter.clone(),
                })
                .collect(),
            data_output: metadata
                .data_outputs
                .iter()
                .map(|output| DataOutput {
                    data_type: output.data_type.clone(),
                    content_type: output.content_types.clone(),
                    required: output.required,
                    name: output.name.clone(),
                })
                .collect(),
        },
    }
}

/// `GET /tasks/<id>/`, with every rule of the contract.
pub(crate) fn task_status(task: &TaskRecord, base: &BaseUrl) -> TaskStatus {
    let steps = (!task.steps.is_empty()).then(|| {
        task.steps
            .iter()
            .map(|step| step_view(&task.plugin, &task.id, &step.step_id, step.cleared, base))
            .collect()
    });
    let outputs = if task.finished_at.is_some() {
        task.outputs.iter().map(|file| output(file, base)).collect()
    } else {
        Vec::new()
    };
    TaskStatus {
        status: task.status.map_or("UNKNOWN", |status| status.as_str()),
        log: task.log.clone(),
        progress: task
            .progress
            .as_ref()
            .filter(|progress| progress.value != 0)
            .map(Progress::from),
        steps,
        outputs,
        links: vec![Link {
            kind: "subscribe".into(),
            href: base.absolute(&format!("/tasks/{}/", task.id)),
        }],
    }
}

/// A step with its absolute URLs.
pub(crate) fn step_view(
    plugin: &str,
    task_id: &str,
    step_id: &str,
    cleared: bool,
    base: &BaseUrl,
) -> Step {
    let step_root = format!("/plugins/{plugin}/{task_id}/{step_id}");
    Step {
        href: base.absolute(&format!("{step_root}-process/")),
        ui_href: base.absolute(&format!("{step_root}-ui/")),
        step_id: step_id.to_owned(),
        cleared,
    }
}

/// One output of a task status.
pub(crate) fn output(file: &FileRecord, base: &BaseUrl) -> Output {
    Output {
        href: base.absolute(&format!("/files/{}/?file-id={}", file.id, file.secret)),
        data_type: file.data_type.clone(),
        content_type: file.content_type.clone(),
        name: file.name.clone(),
    }
}

/// The name of a task event as [`TaskEvent::encode`] spells it, for a name
/// read back from elsewhere; `None` for a name that is not one.
pub(crate) fn event_name(name: &str) -> Option<&'static str> {
    ["log", "progress", "step", "output", "status"]
        .into_iter()
        .find(|known| *known == name)
}

//! manual-classification v0.1.0: a person labels entities, one class per step,
//! for as many steps as it takes; a `done` step finishes, or goes back to
//! classify what was set aside.
//!
//! Each call ends with the next step and the work so far as its state, so a
//! task can wait days between two steps and outlive every restart.

use std::collections::BTreeMap;

use corral_sdk::{
    DataOutput, Error, Field, Inputs, Metadata, Next, Plugin, PluginType, Step, Task,
};
use serde::{Deserialize, Serialize};

const LABELS_TYPE: &str = "entity/label";

struct ManualClassification;

/// The work so far: what is left to label and what is labelled.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Labels {
    /// Entities without a class yet, in input order.
    unlabelled: Vec<String>,
    /// Entity → class.
    labels: BTreeMap<String, String>,
    /// Entities set aside unlabelled (the person checked `last`).
    #[serde(default)]
    skipped: Vec<String>,
    /// Class steps asked for so far.
    classes: u32,
}

impl Labels {
    /// The step that follows: another class while entities are unlabelled,
    /// else `done`.
    fn next(mut self) -> Next<Self> {
        if self.unlabelled.is_empty() {
            let classes: std::collections::BTreeSet<_> = self.labels.values().collect();
            let summary = format!(
                "{} entities in {} classes, {} without a class.",
                self.labels.len(),
                classes.len(),
                self.skipped.len()
            );
            let mut actions = vec![("finish", "Finish: write the labels")];
            if !self.skipped.is_empty() {
                actions.push(("add", "Add a class for the entities without one"));
            }
            let form = vec![
                Field::choice("action", "Finish", actions)
                    .required()
                    .default_value("finish")
                    .help(summary),
            ];
            return Next::step("done", form, self);
        }
        self.classes += 1;
        let form = vec![
            Field::text("label", "Class").required(),
            Field::textarea("members", "Entities of this class")
                .required()
                .help(format!(
                    "Not classified yet: {}",
                    self.unlabelled.join(", ")
                )),
            Field::boolean("last", "Last class (set the rest aside)"),
        ];
        Next::step(format!("class-{}", self.classes), form, self)
    }
}

/// Entity ids separated by commas, spaces or lines.
fn ids(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|id| !id.is_empty())
}

impl Plugin for ManualClassification {
    type State = Labels;

    fn metadata(&self) -> Metadata {
        Metadata::new("manual-classification", "v0.1.0", PluginType::Processing)
            .title("Manual classification")
            .description("A person labels entities, one class per step, then finishes.")
            .tags(["data-annotation", "multistep"])
            .input(
                Field::textarea("entities", "Entities")
                    .required()
                    .help("Entity ids, separated by commas or lines."),
            )
            .data_output(
                DataOutput::new(LABELS_TYPE, ["application/json"])
                    .name("labels.json")
                    .required(),
            )
    }

    async fn invoke(&self, task: Task<Labels>, inputs: Inputs) -> Result<Next<Labels>, Error> {
        let mut unlabelled: Vec<String> = Vec::new();
        for id in ids(inputs.require("entities")?) {
            if !unlabelled.iter().any(|seen| seen == id) {
                unlabelled.push(id.to_owned());
            }
        }
        if unlabelled.is_empty() {
            return Err(Error::task("no entities to classify"));
        }
        task.log(format!("{} entities to classify", unlabelled.len()))
            .await?;
        Ok(Labels {
            unlabelled,
            ..Labels::default()
        }
        .next())
    }

    async fn step(&self, task: Task<Labels>, step: Step<Labels>) -> Result<Next<Labels>, Error> {
        let mut labels = step.state;
        if step.id == "done" {
            if step.inputs.get("action") == Some("add") {
                labels.unlabelled = std::mem::take(&mut labels.skipped);
                return Ok(labels.next());
            }
            return finish(&task, labels).await;
        }
        let class = step.inputs.require("label")?.trim().to_owned();
        let mut taken = 0;
        for id in ids(step.inputs.require("members")?) {
            match labels.unlabelled.iter().position(|left| left == id) {
                Some(index) => {
                    labels.unlabelled.remove(index);
                    labels.labels.insert(id.to_owned(), class.clone());
                    taken += 1;
                }
                None => {
                    task.log(format!(
                        "ignored `{id}`: not an entity, or classified already"
                    ))
                    .await?;
                }
            }
        }
        task.log(format!("class `{class}`: {taken} entities"))
            .await?;
        if step.inputs.get("last") == Some("true") {
            let rest = std::mem::take(&mut labels.unlabelled);
            labels.skipped.extend(rest);
        }
        Ok(labels.next())
    }
}

/// Writes the labels as QHAna entities (`ID`, `label`).
async fn finish(task: &Task<Labels>, labels: Labels) -> Result<Next<Labels>, Error> {
    let entities: Vec<serde_json::Value> = labels
        .labels
        .iter()
        .map(|(id, label)| serde_json::json!({"ID": id, "href": "", "label": label}))
        .collect();
    let json = serde_json::to_vec_pretty(&entities)
        .map_err(|error| Error::task(format!("failed to write the labels: {error}")))?;
    task.output_bytes("labels.json", LABELS_TYPE, "application/json", json)
        .await?;
    Ok(Next::Done)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    corral_sdk::serve(ManualClassification).await
}

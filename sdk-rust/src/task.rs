//! The handle a running task uses to report back: log lines, progress, output
//! files, steps that wait for input, and reading data inputs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use corral_proto::plugin::v1::{self as pb, invoke_event::Event};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Field, data};

/// Form values by field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs(HashMap<String, String>);

impl Inputs {
    /// The value of `field`, if given.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// The value of `field`, or an error naming it.
    pub fn require(&self, field: &str) -> Result<&str, Error> {
        self.get(field)
            .ok_or_else(|| Error::task(format!("missing input `{field}`")))
    }

    /// Every value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

impl From<HashMap<String, String>> for Inputs {
    fn from(values: HashMap<String, String>) -> Self {
        Self(values)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Inputs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        )
    }
}

pub(crate) type EventSender = mpsc::Sender<Result<pb::InvokeEvent, tonic::Status>>;

/// Tasks waiting for a step's input: (task id, step id) → the waiting call's
/// number and where to deliver the input.
pub(crate) type PendingSteps = Arc<Mutex<StepWaits>>;

/// (task id, step id) → the waiting call's number and where to deliver the input.
pub(crate) type StepWaits = HashMap<(String, String), (u64, oneshot::Sender<Inputs>)>;

static NEXT_WAIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One running task. Every method fails with [`Error::Cancelled`] once the
/// gateway dropped the call; return that error and the task ends.
#[derive(Debug)]
pub struct Task {
    id: String,
    events: EventSender,
    steps: PendingSteps,
}

impl Task {
    pub(crate) fn new(id: String, events: EventSender, steps: PendingSteps) -> Self {
        Self { id, events, steps }
    }

    /// The gateway's id of this task.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends a line to the task's log.
    pub async fn log(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Event::Log(pb::LogLine { text: text.into() }))
            .await
    }

    /// Reports progress: `value` of `target` in `unit` (start 0).
    pub async fn progress(&self, value: i64, target: i64, unit: &str) -> Result<(), Error> {
        self.send(Event::Progress(pb::Progress {
            value,
            start: 0,
            target,
            unit: unit.to_owned(),
        }))
        .await
    }

    /// Starts an output file; write its bytes, then [`Output::finish`] it.
    pub async fn output(
        &self,
        name: &str,
        data_type: &str,
        content_type: &str,
    ) -> Result<Output<'_>, Error> {
        self.send(Event::OutputBegin(pb::OutputBegin {
            name: name.to_owned(),
            data_type: data_type.to_owned(),
            content_type: content_type.to_owned(),
        }))
        .await?;
        Ok(Output { task: self })
    }

    /// An output file with all its bytes at hand.
    pub async fn output_bytes(
        &self,
        name: &str,
        data_type: &str,
        content_type: &str,
        bytes: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let mut output = self.output(name, data_type, content_type).await?;
        output.write(bytes.as_ref()).await?;
        output.finish().await
    }

    /// Asks for a step's input with the form `inputs` (their defaults prefill
    /// it) and waits until it is submitted.
    pub async fn step(&self, step_id: &str, inputs: Vec<Field>) -> Result<Inputs, Error> {
        let key = (self.id.clone(), step_id.to_owned());
        let (deliver, delivered) = oneshot::channel();
        let wait = NEXT_WAIT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut pending = self.pending_steps();
            if pending.contains_key(&key) {
                return Err(Error::task(format!(
                    "another run of task `{}` already waits for step `{step_id}`",
                    self.id
                )));
            }
            pending.insert(key.clone(), (wait, deliver));
        }
        let _forget_on_drop = StepGuard {
            steps: &self.steps,
            key,
            wait,
        };
        self.send(Event::StepRequired(pb::StepRequired {
            step_id: step_id.to_owned(),
            inputs: inputs.into_iter().map(Field::into_proto).collect(),
        }))
        .await?;
        tokio::select! {
            inputs = delivered => inputs.map_err(|_| Error::Cancelled),
            () = self.events.closed() => Err(Error::Cancelled),
        }
    }

    /// Reads a data input; see [`read_data`](crate::read_data).
    pub async fn read_data(&self, url: &str) -> Result<Vec<u8>, Error> {
        data::read_data(url).await
    }

    async fn send(&self, event: Event) -> Result<(), Error> {
        self.events
            .send(Ok(pb::InvokeEvent { event: Some(event) }))
            .await
            .map_err(|_| Error::Cancelled)
    }

    fn pending_steps(&self) -> std::sync::MutexGuard<'_, StepWaits> {
        self.steps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Removes this call's wait (and only this call's) when the step ends.
struct StepGuard<'a> {
    steps: &'a PendingSteps,
    key: (String, String),
    wait: u64,
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self
            .steps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if pending
            .get(&self.key)
            .is_some_and(|(wait, _)| *wait == self.wait)
        {
            pending.remove(&self.key);
        }
    }
}

/// An output file being written.
#[derive(Debug)]
pub struct Output<'task> {
    task: &'task Task,
}

impl Output<'_> {
    /// Sends bytes, in chunks of at most 1 MiB.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        for chunk in bytes.chunks(corral_proto::MAX_OUTPUT_CHUNK) {
            self.task
                .send(Event::OutputChunk(pb::OutputChunk {
                    data: chunk.to_vec().into(),
                }))
                .await?;
        }
        Ok(())
    }

    /// Sends bytes the caller already holds as [`Bytes`](corral_proto::bytes::Bytes),
    /// in chunks of at most 1 MiB, without copying them.
    pub async fn write_bytes(&mut self, bytes: corral_proto::bytes::Bytes) -> Result<(), Error> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(corral_proto::MAX_OUTPUT_CHUNK));
            self.task
                .send(Event::OutputChunk(pb::OutputChunk { data: chunk }))
                .await?;
        }
        Ok(())
    }

    /// Ends the file.
    pub async fn finish(self) -> Result<(), Error> {
        self.task.send(Event::OutputEnd(pb::OutputEnd {})).await
    }
}

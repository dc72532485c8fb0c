//! What a running call of a task uses to report back: log lines, progress,
//! output files, checkpoints, and reading data inputs; and what it returns: the
//! task's end, or a step the task waits for.

use std::{collections::HashMap, marker::PhantomData};

use corral_proto::plugin::v1::{self as pb, invoke_event::Event};
use serde::Serialize;
use tokio::sync::mpsc;

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

/// How a call of a task ends well: the task is done, or it waits for a step.
#[derive(Debug)]
pub enum Next<S> {
    /// The task succeeded.
    Done,
    /// The task waits for a step's input; see [`Next::step`].
    Step(StepRequest<S>),
}

impl<S> Next<S> {
    /// The task waits for step `id` with the form `fields` (their defaults
    /// prefill it). The gateway keeps `state`; when the form is submitted,
    /// [`Plugin::step`](crate::Plugin::step) continues the task with it, in
    /// whichever process of the plugin is running then.
    pub fn step(id: impl Into<String>, fields: Vec<Field>, state: S) -> Self {
        Self::Step(StepRequest {
            id: id.into(),
            fields,
            state,
        })
    }
}

/// A step the task waits for.
#[derive(Debug)]
pub struct StepRequest<S> {
    /// Letters, digits, `-` and `_`; the same id may be asked for again later.
    pub id: String,
    /// The step's form.
    pub fields: Vec<Field>,
    /// What the continuation needs.
    pub state: S,
}

/// A submitted step: what [`Plugin::step`](crate::Plugin::step) continues from.
#[derive(Debug)]
pub struct Step<S> {
    /// The step's id.
    pub id: String,
    /// The step's validated form values.
    pub inputs: Inputs,
    /// The state handed over with the step, or a later checkpoint of a call
    /// that crashed and runs again.
    pub state: S,
}

pub(crate) type EventSender = mpsc::Sender<Result<pb::InvokeEvent, tonic::Status>>;

/// One running call of a task (its start, or a step's continuation). Every
/// method fails with [`Error::Cancelled`] once the gateway dropped the call;
/// return that error and the call ends.
#[derive(Debug)]
pub struct Task<S = ()> {
    id: String,
    attempt: u32,
    inputs: Inputs,
    restored: Option<S>,
    events: EventSender,
    _state: PhantomData<fn(S)>,
}

impl<S: Serialize> Task<S> {
    pub(crate) fn new(
        id: String,
        attempt: u32,
        inputs: Inputs,
        restored: Option<S>,
        events: EventSender,
    ) -> Self {
        Self {
            id,
            attempt,
            inputs,
            restored,
            events,
            _state: PhantomData,
        }
    }

    /// The gateway's id of this task.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// 1, or more when this call runs again after the plugin crashed (only for
    /// plugins whose manifest says `retry_safe`).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's own form values (also in a step's continuation).
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// When the task's first call runs again after a crash: the last state it
    /// saved with [`Task::checkpoint`], to continue from.
    pub fn restored(&self) -> Option<&S> {
        self.restored.as_ref()
    }

    /// Takes the restored checkpoint (see [`Task::restored`]).
    pub fn take_restored(&mut self) -> Option<S> {
        self.restored.take()
    }

    /// Saves `state` durably: should this call crash and run again (a
    /// `retry_safe` plugin), it continues from the last checkpoint, in
    /// [`Task::restored`] or [`Step::state`].
    pub async fn checkpoint(&self, state: &S) -> Result<(), Error> {
        let state = encode_state(state)?;
        self.send(Event::Checkpoint(pb::Checkpoint { state })).await
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
        Ok(Output {
            events: &self.events,
        })
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

    /// Reads a data input; see [`read_data`](crate::read_data).
    pub async fn read_data(&self, url: &str) -> Result<Vec<u8>, Error> {
        data::read_data(url).await
    }

    async fn send(&self, event: Event) -> Result<(), Error> {
        send(&self.events, event).await
    }
}

async fn send(events: &EventSender, event: Event) -> Result<(), Error> {
    events
        .send(Ok(pb::InvokeEvent { event: Some(event) }))
        .await
        .map_err(|_| Error::Cancelled)
}

/// A state as the contract carries it: JSON of at most
/// [`MAX_STATE_BYTES`](corral_proto::MAX_STATE_BYTES).
pub(crate) fn encode_state<S: Serialize>(state: &S) -> Result<String, Error> {
    let json = serde_json::to_string(state)
        .map_err(|error| Error::task(format!("the task's state is not JSON: {error}")))?;
    if json.len() > corral_proto::MAX_STATE_BYTES {
        return Err(Error::task(format!(
            "the task's state is {} bytes, more than the limit of {}",
            json.len(),
            corral_proto::MAX_STATE_BYTES
        )));
    }
    Ok(json)
}

/// An output file being written.
#[derive(Debug)]
pub struct Output<'task> {
    events: &'task EventSender,
}

impl Output<'_> {
    /// Sends bytes, in chunks of at most 1 MiB.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        for chunk in bytes.chunks(corral_proto::MAX_OUTPUT_CHUNK) {
            let data = chunk.to_vec().into();
            send(self.events, Event::OutputChunk(pb::OutputChunk { data })).await?;
        }
        Ok(())
    }

    /// Sends bytes the caller already holds as [`Bytes`](corral_proto::bytes::Bytes),
    /// in chunks of at most 1 MiB, without copying them.
    pub async fn write_bytes(&mut self, bytes: corral_proto::bytes::Bytes) -> Result<(), Error> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let data = rest.split_to(rest.len().min(corral_proto::MAX_OUTPUT_CHUNK));
            send(self.events, Event::OutputChunk(pb::OutputChunk { data })).await?;
        }
        Ok(())
    }

    /// Ends the file.
    pub async fn finish(self) -> Result<(), Error> {
        send(self.events, Event::OutputEnd(pb::OutputEnd {})).await
    }
}

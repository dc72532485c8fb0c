//! In-process fan-out of a running task's events to its Server-Sent Events clients.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

/// How many events a slow event-stream client may fall behind.
const BACKLOG: usize = 256;

/// One event of a running task, published once it is stored.
#[derive(Debug, Clone)]
pub(crate) struct LiveEvent {
    /// Its position in the task's stored events (from 1): the SSE `id`.
    pub id: u64,
    /// The SSE event name (see [`TaskEvent`](crate::views::TaskEvent)).
    pub name: &'static str,
    /// Its data, JSON.
    pub data: Arc<str>,
}

impl LiveEvent {
    /// Whether this event ends the task's stream.
    pub(crate) fn is_final(&self) -> bool {
        self.name == "status"
    }
}

/// Task id → the broadcast its stream clients follow; with several gateways,
/// also the fan-out that carries the events of the tasks this gateway runs to
/// the others.
#[derive(Debug, Default, Clone)]
pub(crate) struct LiveEvents {
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>>,
    fanout: Arc<std::sync::OnceLock<crate::fanout::FanOut>>,
    /// Where the ids of tasks another gateway ended go, when a call of
    /// theirs runs here (an operator cancelled it there): the runner stops
    /// those calls.
    ended_elsewhere: Arc<std::sync::OnceLock<EndedElsewhere>>,
}

/// Which tasks run here, and where to tell of those another gateway ended.
struct EndedElsewhere {
    runs_here: Box<dyn Fn(&str) -> bool + Send + Sync>,
    tell: tokio::sync::mpsc::Sender<String>,
}

impl std::fmt::Debug for EndedElsewhere {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EndedElsewhere(…)")
    }
}

impl LiveEvents {
    /// Sends events just stored to the task's followers here and elsewhere.
    pub(crate) fn publish(&self, task_id: &str, events: Vec<LiveEvent>) {
        if let Some(fanout) = self.fanout.get() {
            fanout.send(task_id, &events);
        }
        let channels = self.lock();
        if let Some(sender) = channels.get(task_id) {
            for event in events {
                let _no_followers_is_fine = sender.send(event);
            }
        }
    }

    /// Sends a task's last events here and elsewhere, and forgets the task.
    pub(crate) fn finish(&self, task_id: &str, events: Vec<LiveEvent>) {
        if let Some(fanout) = self.fanout.get() {
            fanout.send(task_id, &events);
        }
        self.deliver(task_id, events);
    }

    /// Hands events to the task's followers here (another gateway's, or the
    /// last of a task); forgets the task after its final event.
    pub(crate) fn deliver(&self, task_id: &str, events: impl IntoIterator<Item = LiveEvent>) {
        let mut channels = self.lock();
        let Some(sender) = channels.get(task_id) else {
            return;
        };
        let mut ended = false;
        for event in events {
            ended |= event.is_final();
            let _no_followers_is_fine = sender.send(event);
        }
        if ended {
            channels.remove(task_id);
        }
    }

    /// Whether anyone here follows the task.
    pub(crate) fn is_followed(&self, task_id: &str) -> bool {
        self.lock().contains_key(task_id)
    }

    /// Tells `tell` of each task another gateway ends for which `runs_here`
    /// holds (best effort: a call not stopped this way stops at its next
    /// write, or when the runner looks).
    pub(crate) fn on_ended_elsewhere(
        &self,
        runs_here: impl Fn(&str) -> bool + Send + Sync + 'static,
        tell: tokio::sync::mpsc::Sender<String>,
    ) {
        let _set_once = self.ended_elsewhere.set(EndedElsewhere {
            runs_here: Box::new(runs_here),
            tell,
        });
    }

    /// Another gateway ended the task.
    pub(crate) fn ended_elsewhere(&self, task_id: &str) {
        if let Some(ended) = self.ended_elsewhere.get()
            && (ended.runs_here)(task_id)
        {
            let _full_is_fine = ended.tell.try_send(task_id.to_owned());
        }
    }

    /// Carries the events of the tasks this gateway runs to other gateways.
    pub(crate) fn fan_out(&self, fanout: crate::fanout::FanOut) {
        let _set_once = self.fanout.set(fanout);
    }

    /// The fan-out's link, when events come from other gateways too.
    pub(crate) fn link(&self) -> Option<tokio::sync::watch::Receiver<crate::fanout::Link>> {
        self.fanout.get().map(crate::fanout::FanOut::link)
    }

    /// Follows a task's events from now on.
    pub(crate) fn subscribe(&self, task_id: &str) -> broadcast::Receiver<LiveEvent> {
        self.lock()
            .entry(task_id.to_owned())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe()
    }

    /// Drops the task's channel when no follower is left (a task that waits for
    /// a step keeps none for followers that went away).
    pub(crate) fn release(&self, task_id: &str) {
        let mut channels = self.lock();
        if channels
            .get(task_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(task_id);
        }
    }

    /// Drops the channel of a task that has already ended (a late follower made it).
    pub(crate) fn forget(&self, task_id: &str) {
        self.lock().remove(task_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<LiveEvent>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

//! Events across gateways: the gateway that runs a task publishes each batch
//! of its events on Redis after the batch is committed; every gateway
//! subscribes and hands them to its own followers of that task. Redis is a
//! shortcut, never the truth: events carry their position in the task's
//! stored stream, so a follower that sees a gap, or learns that the link to
//! Redis was down (the link's `epoch` moved), reads what it missed from the
//! database; with Redis unreachable, followers read the database on a timer.
//! See `tasks.md`.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::live::{LiveEvent, LiveEvents};

/// Batches waiting to be published; past this, batches are dropped (the
/// followers elsewhere notice the gap and read the database).
const OUTGOING: usize = 4096;
/// The most batches published in one round trip.
const PIPELINE: usize = 64;
/// How often the subscription is pinged: a link that died without a word is
/// noticed within about twice this.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The longest a connection, a publish or a ping may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of the subscription: followers poll the database while it is
/// down, and repair from the database each time `epoch` moves (events may have
/// been missed meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) up: bool,
    pub(crate) epoch: u64,
}

/// This gateway's end of the fan-out.
#[derive(Debug, Clone)]
pub(crate) struct FanOut {
    origin: Arc<str>,
    outgoing: mpsc::Sender<Vec<u8>>,
    link: watch::Receiver<Link>,
}

impl FanOut {
    /// Publishes and subscribes on Redis at `url`, channel `<prefix>:events`,
    /// reconnecting until `shutdown`; what arrives from other gateways goes to
    /// `live`'s followers.
    pub(crate) fn start(
        url: &str,
        prefix: &str,
        live: LiveEvents,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let channel: Arc<str> = format!("{prefix}:events").into();
        let origin: Arc<str> = crate::ids::random_id().into();
        let (outgoing, queued) = mpsc::channel(OUTGOING);
        let (link_sender, link) = watch::channel(Link::default());
        tokio::spawn(publish(
            client.clone(),
            channel.clone(),
            queued,
            shutdown.clone(),
        ));
        tokio::spawn(subscribe(
            client,
            channel,
            origin.clone(),
            live,
            link_sender,
            shutdown,
        ));
        Ok(Self {
            origin,
            outgoing,
            link,
        })
    }

    /// Sends a task's events just committed to the other gateways; never
    /// waits (a batch that does not fit is dropped and repaired by gaps).
    pub(crate) fn send(&self, task_id: &str, events: &[LiveEvent]) {
        if events.is_empty() {
            return;
        }
        let payload = encode(&self.origin, task_id, events);
        if self.outgoing.try_send(payload).is_err() {
            tracing::debug!(
                task = task_id,
                "fan-out queue full; followers elsewhere repair"
            );
        }
    }

    /// The subscription's state, for followers: its changes from now on.
    pub(crate) fn link(&self) -> watch::Receiver<Link> {
        let mut link = self.link.clone();
        link.mark_unchanged();
        link
    }
}

async fn publish(
    client: redis::Client,
    channel: Arc<str>,
    mut queued: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let mut connection = None;
    let mut payloads = Vec::with_capacity(PIPELINE);
    loop {
        // What queued up meanwhile goes in one round trip.
        let received = tokio::select! {
            received = queued.recv_many(&mut payloads, PIPELINE) => received,
            () = shutdown.cancelled() => return,
        };
        if received == 0 {
            return;
        }
        if connection.is_none() {
            match client
                .get_connection_manager_with_config(config.clone())
                .await
            {
                Ok(manager) => connection = Some(manager),
                Err(error) => {
                    tracing::debug!(%error, "Redis unreachable; batches of events not fanned out");
                    payloads.clear();
                    continue;
                }
            }
        }
        if let Some(manager) = connection.as_mut() {
            let mut pipeline = redis::pipe();
            for payload in payloads.drain(..) {
                pipeline.publish(&*channel, payload).ignore();
            }
            let published: redis::RedisResult<()> = pipeline.query_async(manager).await;
            if let Err(error) = published {
                tracing::debug!(%error, "batches of events not fanned out");
            }
        }
    }
}

async fn subscribe(
    client: redis::Client,
    channel: Arc<str>,
    origin: Arc<str>,
    live: LiveEvents,
    link: watch::Sender<Link>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let connected = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&*channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        });
        let pubsub = tokio::select! {
            connected = connected => connected,
            () = shutdown.cancelled() => return,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                delay = Duration::from_millis(100);
                link.send_modify(|link| {
                    link.up = true;
                    link.epoch += 1;
                });
                tracing::info!("following other gateways' events on Redis");
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(PING_EVERY);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => deliver(&origin, &live, message.get_payload_bytes()),
                            None => break,
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>());
                            if !matches!(pong.await, Ok(Ok(_))) {
                                break;
                            }
                        }
                        () = shutdown.cancelled() => return,
                    }
                }
                tracing::warn!(
                    "lost the link to Redis; reading events from the database meanwhile"
                );
            }
            Ok(Err(error)) => tracing::debug!(%error, "Redis unreachable"),
            Err(_) => tracing::debug!("connecting to Redis timed out"),
        }
        // Followers are woken once when the link goes down, not at every
        // failed reconnection.
        link.send_if_modified(|link| {
            let was_up = link.up;
            if was_up {
                link.up = false;
                link.epoch += 1;
            }
            was_up
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// A batch on the wire: a line with the origin and the task, then a line per
/// event (`<id> <name> <data>`; data is one line of JSON).
fn encode(origin: &str, task_id: &str, events: &[LiveEvent]) -> Vec<u8> {
    let size: usize = events.iter().map(|event| event.data.len() + 32).sum();
    let mut payload = String::with_capacity(origin.len() + task_id.len() + 2 + size);
    payload.push_str(origin);
    payload.push(' ');
    payload.push_str(task_id);
    for event in events {
        payload.push('\n');
        payload.push_str(&event.id.to_string());
        payload.push(' ');
        payload.push_str(event.name);
        payload.push(' ');
        payload.push_str(&event.data);
    }
    payload.into_bytes()
}

/// Hands another gateway's batch to this gateway's followers of its task.
fn deliver(origin: &str, live: &LiveEvents, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some((sender, task_id)) = lines.next().and_then(|head| head.split_once(' ')) else {
        return;
    };
    if sender == origin {
        return;
    }
    // A task's end matters here even unfollowed: a call of it may run here
    // (an operator ended it on another gateway).
    let last_name = text
        .rsplit('\n')
        .next()
        .and_then(|line| line.split(' ').nth(1));
    if last_name == Some("status") {
        live.ended_elsewhere(task_id);
    }
    if !live.is_followed(task_id) {
        return;
    }
    let events = lines.filter_map(|line| {
        let (id, rest) = line.split_once(' ')?;
        let (name, data) = rest.split_once(' ')?;
        Some(LiveEvent {
            id: id.parse().ok()?,
            name: crate::views::event_name(name)?,
            data: data.into(),
        })
    });
    live.deliver(task_id, events);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_it_was_sent_and_ones_own_are_ignored() {
        let live = LiveEvents::default();
        let mut follower = live.subscribe("t1");
        let events = [
            LiveEvent {
                id: 4,
                name: "log",
                data: r#"{"text":"a b\\nc"}"#.into(),
            },
            LiveEvent {
                id: 5,
                name: "status",
                data: r#"{"status":"SUCCESS"}"#.into(),
            },
        ];
        let payload = encode("gw1", "t1", &events);
        deliver("gw1", &live, &payload);
        assert!(
            follower.try_recv().is_err(),
            "one's own batch is not delivered again"
        );
        deliver("gw2", &live, &payload);
        let first = follower.try_recv().expect("the log line");
        assert_eq!(
            (first.id, first.name, &*first.data),
            (4, "log", r#"{"text":"a b\\nc"}"#)
        );
        let last = follower.try_recv().expect("the status");
        assert!(last.is_final());
        assert!(!live.is_followed("t1"), "a finished task's channel goes");
        deliver("gw2", &live, b"\xff garbage");
    }
}

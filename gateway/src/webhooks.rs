//! Webhook delivery from the outbox: every notice is a row of `notices`,
//! written in the transaction of the change that causes it, so a commit's
//! notices survive any crash. A dispatcher (woken by the store after a commit
//! that wrote notices) keeps one worker per subscriber
//! with notices waiting; each worker delivers its subscriber's notices in
//! order, retrying a failed one with backoff for a bounded time, and deletes
//! each once delivered (or given up). A slow or dead subscriber holds up only
//! its own notices. With several gateways, a subscriber's notices are
//! delivered by the one whose live lease claimed them (`notice_claims`); the
//! claim passes on when that lease expires.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    lease::Lease,
    store::{Notice, Store, now_millis},
};

/// Deadline of one POST.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The first delay after a failed POST; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay between two tries of a notice.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// How often the outbox is looked at without being woken (notices another
/// process wrote, or one written as a worker was leaving).
const POLL: Duration = Duration::from_millis(500);
/// How many notices a worker reads at once.
const READ_AHEAD: i64 = 32;
/// How many POSTs are in flight at the same time.
const MAX_WORKERS: usize = 256;

/// Which change a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookEvent {
    /// The task's status changed (it finished).
    Status,
    /// A step was added or cleared.
    Steps,
    /// Anything shown in the task's details changed.
    Details,
}

impl WebhookEvent {
    /// The `event` query value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Steps => "steps",
            Self::Details => "details",
        }
    }
}

/// Starts the outbox's dispatcher (woken by the store after each commit that
/// wrote notices); it stops at `shutdown`, and what is not delivered stays in
/// the outbox for the next start. A notice not delivered within `retry_for` of
/// its change is given up, with an error in the log.
pub(crate) fn deliver_notices(
    store: Store,
    lease: Lease,
    retry_for: Duration,
    shutdown: CancellationToken,
) -> Result<(), reqwest::Error> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let dispatcher = Dispatcher {
        wake: store.outbox(),
        store,
        lease,
        client,
        retry_for,
        shutdown,
        workers: HashMap::new(),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_WORKERS)),
    };
    tokio::spawn(dispatcher.run());
    Ok(())
}

struct Dispatcher {
    store: Store,
    lease: Lease,
    client: reqwest::Client,
    retry_for: Duration,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
    /// The worker of each subscriber with notices waiting.
    workers: HashMap<String, JoinHandle<()>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            self.workers.retain(|_, worker| !worker.is_finished());
            match self.store.notice_subscribers().await {
                Ok(subscribers) => {
                    for href in subscribers {
                        if !self.workers.contains_key(&href) {
                            let worker = self.worker(href.clone());
                            self.workers.insert(href, tokio::spawn(worker));
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "failed to read the webhook outbox"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Delivers `href`'s notices in order until none is left, while this
    /// gateway's lease holds the subscriber's claim.
    fn worker(&self, href: String) -> impl Future<Output = ()> + use<> {
        let (store, client) = (self.store.clone(), self.client.clone());
        let (retry_for, shutdown) = (self.retry_for, self.shutdown.clone());
        let (slots, lease) = (self.slots.clone(), self.lease.clone());
        async move {
            loop {
                let Some(holder) = lease.holder() else {
                    return;
                };
                match store.claim_subscriber(&href, &holder.id).await {
                    Ok(true) => {}
                    // Another gateway delivers them.
                    Ok(false) => return,
                    Err(error) => {
                        tracing::error!(%href, %error, "failed to claim webhook notices");
                        return;
                    }
                }
                let notices = match store.notices(&href, READ_AHEAD).await {
                    Ok(notices) if notices.is_empty() => {
                        if let Err(error) = store.release_subscriber(&href, &holder.id).await {
                            tracing::warn!(%href, %error, "failed to release webhook notices");
                        }
                        return;
                    }
                    Ok(notices) => notices,
                    Err(error) => {
                        tracing::error!(%href, %error, "failed to read webhook notices");
                        return;
                    }
                };
                for notice in notices {
                    // Each notice under a claim still held: once the lease is
                    // lost, the gateway that takes the claim over delivers.
                    if !matches!(store.claim_subscriber(&href, &holder.id).await, Ok(true)) {
                        return;
                    }
                    tokio::select! {
                        () = deliver(&client, &slots, &notice, retry_for) => {}
                        () = shutdown.cancelled() => return,
                        () = holder.lost.cancelled() => return,
                    }
                    if let Err(error) = store.delete_notice(&notice).await {
                        // Delivered again later: at least once.
                        tracing::error!(%href, %error, "failed to forget a delivered notice");
                        return;
                    }
                }
            }
        }
    }
}

/// POSTs a notice until its subscriber takes it (a 2xx answer), or until
/// `retry_for` after its change has passed. Each POST takes one of the
/// `slots` (none is held while waiting to try again).
async fn deliver(
    client: &reqwest::Client,
    slots: &tokio::sync::Semaphore,
    notice: &Notice,
    retry_for: Duration,
) {
    let href = &notice.webhook_href;
    let Ok(mut url) = url::Url::parse(href) else {
        tracing::warn!(%href, "invalid webhook URL; notice dropped");
        return;
    };
    url.query_pairs_mut()
        .append_pair("source", &notice.task_url)
        .append_pair("event", &notice.event);
    let give_up_at = notice.created_at + i64::try_from(retry_for.as_millis()).unwrap_or(i64::MAX);
    let mut delay = FIRST_DELAY;
    loop {
        let Ok(slot) = slots.acquire().await else {
            return;
        };
        match client.post(url.clone()).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(%url, status = %response.status(), "webhook refused"),
            Err(error) => tracing::warn!(%url, %error, "webhook failed"),
        }
        if now_millis() >= give_up_at {
            tracing::error!(%url, task = %notice.task_id, "webhook not delivered in time; notice dropped");
            return;
        }
        drop(slot);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

//! Webhook delivery, off the request path: one worker POSTs each notice to the
//! task's subscribers in order, with a timeout and bounded retries.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{store::Store, urls::BaseUrl};

/// How many notices may wait for delivery before task runners wait.
const QUEUE: usize = 1024;
/// Deadline of one POST.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Delays before the retries of a failed POST.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Steps => "steps",
            Self::Details => "details",
        }
    }
}

#[derive(Debug)]
struct Notice {
    task_id: String,
    task_url: String,
    event: WebhookEvent,
}

/// The sending end of the delivery worker.
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    queue: mpsc::Sender<Notice>,
}

impl Webhooks {
    /// Starts the delivery worker.
    pub(crate) fn start(store: Store) -> Self {
        let (queue, mut notices) = mpsc::channel::<Notice>(QUEUE);
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Some(notice) = notices.recv().await {
                let subscribers = match store
                    .subscribers(&notice.task_id, notice.event.as_str())
                    .await
                {
                    Ok(subscribers) => subscribers,
                    Err(error) => {
                        tracing::error!(task = %notice.task_id, %error, "failed to read webhook subscribers");
                        continue;
                    }
                };
                for href in subscribers {
                    deliver(&client, &href, &notice).await;
                }
            }
        });
        Self { queue }
    }

    /// Queues `events` of a task, in order, without waiting: a full queue drops
    /// the notice with a warning rather than hold up a request or a task.
    pub(crate) fn notify(&self, task_id: &str, base: &BaseUrl, events: &[WebhookEvent]) {
        let task_url = base.absolute(&format!("/tasks/{task_id}/"));
        for event in events {
            let notice = Notice {
                task_id: task_id.to_owned(),
                task_url: task_url.clone(),
                event: *event,
            };
            if let Err(error) = self.queue.try_send(notice) {
                tracing::warn!(task = %task_id, %error, "webhook notice dropped");
            }
        }
    }
}

async fn deliver(client: &reqwest::Client, href: &str, notice: &Notice) {
    let Ok(mut url) = url::Url::parse(href) else {
        tracing::warn!(%href, "invalid webhook URL");
        return;
    };
    url.query_pairs_mut()
        .append_pair("source", &notice.task_url)
        .append_pair("event", notice.event.as_str());
    for delay in std::iter::once(Duration::ZERO).chain(RETRY_DELAYS) {
        tokio::time::sleep(delay).await;
        match client.post(url.clone()).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::warn!(%url, status = %response.status(), "webhook refused");
            }
            Err(error) => tracing::warn!(%url, %error, "webhook failed"),
        }
    }
    tracing::error!(%url, task = %notice.task_id, "webhook not delivered after retries");
}

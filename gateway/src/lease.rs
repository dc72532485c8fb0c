//! The gateway's lease: a row of `gateways` it renews, with a fresh random id
//! per start. The calls it runs carry that id (`tasks.owner`), every write of
//! a running task is fenced by it (see `Store`), and any gateway adopts the
//! calls of a lease that expired. Expiry is judged by the database's clock;
//! a gateway that cannot renew stops its calls before its lease ends (by its
//! own clock, counted from the renewal it last sent), then joins again under a
//! new id. See `tasks.md`.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::store::{Fence, Store, StoreError};

/// How long a lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// How long after its last renewal a lease expires: the longest a dead
    /// gateway's calls wait to be adopted.
    pub ttl: Duration,
    /// How often the lease is renewed (and orphaned calls looked for).
    pub renew_every: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            renew_every: Duration::from_secs(1),
        }
    }
}

impl LeaseSettings {
    /// How long before its lease ends a gateway that could not renew stops
    /// acting: a quarter of the lease, at most a second.
    fn margin(self) -> Duration {
        (self.ttl / 4).min(Duration::from_secs(1))
    }

    fn ttl_millis(self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The lease this gateway holds now.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    /// The lease's id: `tasks.owner` of the calls it runs.
    pub(crate) id: Arc<str>,
    /// Cancelled when the lease is lost: its calls stop and write nothing more.
    pub(crate) lost: CancellationToken,
}

impl Holder {
    /// The right to write a task whose call runs under this lease, at `attempt`.
    pub(crate) fn claim(&self, attempt: i64) -> Claim {
        Claim {
            fence: Fence {
                owner: self.id.clone(),
                attempt,
            },
            lost: self.lost.clone(),
        }
    }
}

/// A task this gateway may write: the fence its writes carry, and the loss of
/// the lease they are made under.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) fence: Fence,
    pub(crate) lost: CancellationToken,
}

/// The gateway's lease, as its handlers and runners see it.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    current: watch::Receiver<Option<Holder>>,
}

impl Lease {
    /// Takes a lease (refused on SQLite when another gateway holds one), then
    /// keeps it renewed until `shutdown`, when it ends it.
    pub(crate) async fn acquire(
        store: Store,
        place: String,
        url: String,
        settings: LeaseSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let sent = Instant::now();
        let holder = begin(&store, &place, &url, settings, true).await?;
        tracing::info!(lease = %holder.id, "gateway lease taken");
        let (sender, current) = watch::channel(Some(holder.clone()));
        let keeper = Keeper {
            store,
            place,
            url,
            settings,
            sender,
        };
        tokio::spawn(keeper.run(holder, sent + settings.ttl - settings.margin(), shutdown));
        Ok(Self { current })
    }

    /// The lease now; `None` while the gateway joins again after losing one.
    pub(crate) fn holder(&self) -> Option<Holder> {
        self.current.borrow().clone()
    }
}

async fn begin(
    store: &Store,
    place: &str,
    url: &str,
    settings: LeaseSettings,
    starting: bool,
) -> Result<Holder, StoreError> {
    let id: Arc<str> = crate::ids::random_id().into();
    store
        .begin_lease(&id, place, url, settings.ttl_millis(), starting)
        .await?;
    Ok(Holder {
        id,
        lost: CancellationToken::new(),
    })
}

struct Keeper {
    store: Store,
    place: String,
    url: String,
    settings: LeaseSettings,
    sender: watch::Sender<Option<Holder>>,
}

impl Keeper {
    async fn run(self, mut holder: Holder, mut valid_until: Instant, shutdown: CancellationToken) {
        let ttl = self.settings.ttl_millis();
        loop {
            // The next renewal, never later than the moment to give the lease
            // up (a renewal that failed fast is tried again at once then).
            let next = (Instant::now() + self.settings.renew_every).min(valid_until);
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = shutdown.cancelled() => break,
            }
            let renewed = if Instant::now() >= valid_until {
                None
            } else {
                let sent = Instant::now();
                tokio::select! {
                    renewed = self.store.renew_lease(&holder.id, ttl) => Some((renewed, sent)),
                    // A renewal that hangs past the lease's end is no renewal.
                    () = tokio::time::sleep_until(valid_until) => None,
                    () = shutdown.cancelled() => break,
                }
            };
            match renewed {
                Some((Ok(true), sent)) => {
                    // Counted from when it was sent: the database's clock may
                    // have started the new term any time after.
                    valid_until = sent + self.settings.ttl - self.settings.margin();
                    continue;
                }
                Some((Err(error), _)) => {
                    tracing::warn!(%error, "failed to renew the gateway's lease; trying again");
                    continue;
                }
                Some((Ok(false), _)) => {
                    tracing::warn!(lease = %holder.id, "the gateway's lease expired");
                }
                None => {
                    tracing::warn!(lease = %holder.id, "the gateway's lease could not be renewed in time");
                }
            }
            // Stop acting before the lease ends: its calls are other gateways' now.
            self.sender.send_replace(None);
            holder.lost.cancel();
            tracing::warn!("stopped this gateway's running calls; joining again under a new lease");
            let Some((next, sent)) = self.rejoin(&shutdown).await else {
                return;
            };
            tracing::info!(lease = %next.id, "gateway lease taken again");
            holder = next;
            valid_until = sent + self.settings.ttl - self.settings.margin();
            self.sender.send_replace(Some(holder.clone()));
        }
        if let Err(error) = self.store.end_lease(&holder.id).await {
            tracing::warn!(%error, "failed to end the gateway's lease");
        }
    }

    /// A new lease, tried with backoff until one is taken or shutdown.
    async fn rejoin(&self, shutdown: &CancellationToken) -> Option<(Holder, Instant)> {
        let mut delay = Duration::from_millis(100);
        loop {
            let sent = Instant::now();
            let attempt = tokio::time::timeout(
                self.settings.ttl,
                begin(&self.store, &self.place, &self.url, self.settings, false),
            );
            match attempt.await {
                Ok(Ok(holder)) => return Some((holder, sent)),
                Ok(Err(error)) => tracing::warn!(%error, "failed to take a new gateway lease"),
                Err(_) => tracing::warn!("taking a new gateway lease timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// Where a gateway runs: the id kept in its data directory (made at its first
/// start), with its host name and folder for people to read. A gateway that
/// starts again there ends its previous lease at once; two data directories
/// never share one, whatever their paths or host names.
pub(crate) async fn place(data_dir: &std::path::Path) -> std::io::Result<String> {
    let file = data_dir.join("gateway-id");
    let id = match tokio::fs::read_to_string(&file).await {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        Ok(_) => write_id(&file).await?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => write_id(&file).await?,
        Err(error) => return Err(error),
    };
    let host = tokio::fs::read_to_string("/proc/sys/kernel/hostname")
        .await
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    Ok(format!("{id} ({host}:{})", data_dir.display()))
}

async fn write_id(file: &std::path::Path) -> std::io::Result<String> {
    let id = crate::ids::random_id();
    tokio::fs::write(file, &id).await?;
    Ok(id)
}

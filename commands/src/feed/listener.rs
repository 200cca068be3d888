//! One `LISTEN ordo_events` connection per database for every reader of this process.
//!
//! PostgreSQL signals every backend listening in a database on each `NOTIFY`, and each one
//! wakes and runs a transaction to read the notification queue. With a listener per
//! reader (three projection runners, the relay, the process manager) every commit woke five
//! backends and five client tasks, a transaction each: as many transactions again as the
//! commands themselves. One listener raises the process's [`KnownHead`], which every reader
//! already waits on.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{KnownHead, CHANNEL};
use crate::db::{per_database, PerDatabase};

/// How long the listener waits before connecting again after it lost its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The shared listener of one database, held by each [`super::Wakeup`] that uses it; the
/// last one dropped stops it (and returns its connection).
pub(super) struct Listening {
    /// Bumped when a notification says something without a position, and after each
    /// (re)connection (what was sent meanwhile is unknown): every waiting reader looks.
    nudged: watch::Sender<u64>,
    task: AbortHandle,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listening {
    /// The listener of `pool`'s database, started if none is running.
    pub(super) fn of(pool: &PgPool) -> Arc<Self> {
        static LISTENERS: PerDatabase<Arc<Mutex<Weak<Listening>>>> = PerDatabase::new();
        let slot = per_database(&LISTENERS, pool, Default::default);
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.upgrade() {
            return running;
        }
        let nudged = watch::Sender::new(0);
        let task = tokio::spawn(listen(pool.clone(), nudged.clone())).abort_handle();
        let started = Arc::new(Self { nudged, task });
        *slot = Arc::downgrade(&started);
        started
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.nudged.subscribe()
    }
}

/// Listen until aborted: raise the known head to each notified position, nudge the readers
/// on anything else; connect again after a lost connection.
async fn listen(pool: PgPool, nudged: watch::Sender<u64>) {
    let known = KnownHead::of(&pool);
    let nudge = || nudged.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        match connect(&pool).await {
            Ok(mut listener) => {
                nudge();
                // Until the connection is lost: what it would have said then is unknown.
                while let Ok(Some(notification)) = listener.try_recv().await {
                    match notification.payload().parse::<i64>() {
                        Ok(position) => known.raise(position),
                        Err(_) => nudge(),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot LISTEN; readers poll"),
        }
        nudge();
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

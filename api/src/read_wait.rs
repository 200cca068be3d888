//! Read your writes: a read with `min_position=N` waits until its projection has applied the
//! event at N. Waiting costs no polling: one connection per process LISTENs for the
//! runners' announcements (`status::PROJECTED_CHANNEL`) and wakes every waiting read, which
//! then checks its projection once. A slow re-check covers announcements lost while that
//! connection was down.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ordo_projections::{status, Projection};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a waiting read checks anyway, should an announcement be lost.
const RECHECK: Duration = Duration::from_millis(500);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Reached,
    /// The timeout passed first.
    Behind,
    /// No committed event has this position: waiting could never end.
    NoSuchPosition,
}

/// Wakes waiting reads when a projection moves; shared by every request of a process.
#[derive(Clone, Default)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped on every announcement (and after reconnecting, when some may have been lost).
    moves: OnceLock<watch::Sender<u64>>,
}

impl Progress {
    fn subscribe(&self, pool: &PgPool) -> watch::Receiver<u64> {
        let sender = self.inner.moves.get_or_init(|| {
            let (sender, _) = watch::channel(0);
            tokio::spawn(listen(Arc::downgrade(&self.inner), pool.clone()));
            sender
        });
        sender.subscribe()
    }

    /// Wait until `projection` has applied `position`, at most `timeout`.
    pub async fn wait_for(
        &self,
        pool: &PgPool,
        projection: Projection,
        position: i64,
        timeout: Duration,
    ) -> Result<Waited, sqlx::Error> {
        let deadline = Instant::now() + timeout;
        let mut moves = self.subscribe(pool);
        moves.borrow_and_update();
        if status::reached(pool, projection, position).await? {
            return Ok(Waited::Reached);
        }
        if !ordo_commands::head::committed(pool, position).await? {
            return Ok(Waited::NoSuchPosition);
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Waited::Behind);
            }
            // Woken, re-checking, or out of time: each way, look again.
            let _ = tokio::time::timeout((deadline - now).min(RECHECK), moves.changed()).await;
            moves.borrow_and_update();
            if status::reached(pool, projection, position).await? {
                return Ok(Waited::Reached);
            }
        }
    }
}

/// The process's one listener; ends once the application state that started it is gone.
async fn listen(inner: Weak<Inner>, pool: PgPool) {
    let bump = |inner: &Weak<Inner>| match inner.upgrade() {
        Some(inner) => {
            if let Some(moves) = inner.moves.get() {
                moves.send_modify(|n| *n = n.wrapping_add(1));
            }
            true
        }
        None => false,
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "cannot LISTEN for projection progress; reads re-check");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !bump(&inner) {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(status::PROJECTED_CHANNEL).await {
            tracing::debug!(error = %e, "cannot LISTEN for projection progress; reads re-check");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Announcements made before this point were missed.
        if !bump(&inner) {
            return;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await {
                Ok(Ok(Some(_))) => {}
                Err(_) => {
                    // Idle: only check that someone still listens.
                    if inner.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
                // Connection lost: connect again.
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
            if !bump(&inner) {
                return;
            }
        }
    }
}

//! `Idempotency-Key`: a retry with the same key and request gets the first answer back and
//! writes no new events, exactly once even if the process died between commit and answer.
//!
//! How: the answer (status and body) is written by the appender in the same transaction as
//! the command's events ([`crate::appender`]), so a commit without its answer cannot happen
//! and nothing needs recovering after a crash. A request does not look for a stored answer
//! first: the appender checks for one under its lock before anything else, so a retry runs
//! its command again (cheap; it writes nothing) and gets the stored answer back from the
//! append, or from recording its refusal. The first request pays no lookup. While it runs,
//! its key is held in this process's [`InFlight`] set, so a duplicate arriving meanwhile is
//! refused (409). A duplicate sent to another process at the same time is decided by the
//! commit point: the appender checks for a stored answer under its lock, so the second to
//! commit writes nothing and answers with the first one's stored answer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use crate::CommandError;

/// How long a key is remembered: at least 24 hours.
pub const RETENTION_HOURS: i32 = 24;

/// The keys this process is running a command for right now.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<(String, String)>>>,
}

/// A key held in [`InFlight`]; dropping it lets the key go.
#[derive(Debug)]
pub struct Held {
    keys: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl InFlight {
    /// Hold `key` for a request; `None` when another request of this process holds it.
    pub fn hold(&self, scope: &str, key: &str) -> Option<Held> {
        let key = (scope.to_owned(), key.to_owned());
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(key.clone()).then(|| Held {
            keys: self.keys.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(&self.key);
    }
}

/// Delete keys older than the retention period; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, CommandError> {
    let done = sqlx::query(
        "DELETE FROM event_store.idempotency_keys
          WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

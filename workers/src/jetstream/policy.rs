//! What a worker states about itself: its name, its processed table, which events it can
//! never handle, and its handler. The runner does the rest. A handler only writes rows in
//! the worker's own schema (effects that leave the database go through an outbox, ADR
//! 0009), so a batch of events is handled in one transaction.
//! (tower's split: the runner is the service machinery, a policy the part that differs.)

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use super::message::Delivered;

/// Whether `event_type` (`order.placed`) matches `pattern`.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// A worker, as the runner sees it.
#[async_trait]
pub trait Policy: Send + Sync + 'static {
    /// Its durable consumer's name, its dead-letter subject's last token, its metrics label.
    fn name(&self) -> &'static str;

    /// `<schema>.processed (event_id uuid PRIMARY KEY)`: the events it has handled, so a
    /// redelivery or a replay has no effect twice.
    fn processed_table(&self) -> &'static str;

    /// Whether `event` can be handled at all, without I/O: an event refused here (a body
    /// that does not read, say: [`HandleError::Poison`]) is settled alone, so it never
    /// fails a batch.
    fn check(&self, _event: &Delivered) -> Result<(), HandleError> {
        Ok(())
    }

    /// Apply `events` (fresh: never handled before) inside `tx`, the transaction that
    /// records them as processed. `pool` is for records that must outlive a rolled-back
    /// `tx`.
    async fn handle(
        &self,
        pool: &PgPool,
        tx: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError>;
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// This message can never be handled: straight to the dead letters.
    #[error("{0}")]
    Poison(String),
    /// Perhaps later (the database is away, say): redeliver after the backoff.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A side effect failed (a webhook answered non-2xx, say): redeliver after the backoff.
    #[error("{0}")]
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_by_prefix_or_everything() {
        assert!(pattern_matches("order.placed", "order.placed"));
        assert!(!pattern_matches("order.placed", "order.placed2"));
        assert!(!pattern_matches("order.placed", "order.shipped"));
        assert!(pattern_matches("payment.*", "payment.captured"));
        assert!(!pattern_matches("payment.*", "paymentx.captured"));
        assert!(!pattern_matches("payment.*", "order.placed"));
        assert!(pattern_matches("*", "customer.registered"));
    }
}

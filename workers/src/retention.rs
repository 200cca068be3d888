//! The retention of delivery history: delivered webhooks (their outbox rows and the
//! attempts recorded for them) and the attempts of sent e-mail are deleted once older than
//! the retention, in the background, in bounded batches (oldest first, each its own short
//! statement), so the outboxes stay as small as what is still in flight plus the window an
//! operator looks back on.
//!
//! Kept: pending and failed webhook deliveries (an operator may retry them) and their
//! attempts; the notifications themselves (what `GET /v1/notifications` lists, and what
//! keeps one e-mail per event and kind) — only their attempts go.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

/// How long history is kept, and how much one statement deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// History older than this is deleted.
    pub keep: Duration,
    /// Rows per statement.
    pub batch: i64,
    /// How often the purge runs.
    pub every: Duration,
}

impl Retention {
    pub fn days(days: u32) -> Self {
        Self {
            keep: Duration::from_secs(u64::from(days) * 24 * 3600),
            batch: 1000,
            every: Duration::from_secs(600),
        }
    }
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Delivered webhook deliveries (each with its attempts).
    pub webhooks: u64,
    /// Attempts of sent e-mail.
    pub mail_attempts: u64,
}

/// Delete, in batches of `batch`, the delivered webhooks and sent e-mails' attempts older
/// than `before`; returns when a batch of each comes back short.
pub async fn purge(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<Purged, sqlx::Error> {
    let mut purged = Purged::default();
    loop {
        let n: i64 = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM integration.outbox WHERE id IN (
                     SELECT id FROM integration.outbox
                      WHERE status = 'delivered' AND delivered_at < $1
                      ORDER BY delivered_at LIMIT $2
                        FOR UPDATE SKIP LOCKED)
                 RETURNING id),
             attempts AS (
                 DELETE FROM integration.deliveries d USING gone WHERE d.delivery_id = gone.id)
             SELECT count(*) FROM gone",
        )
        .bind(before)
        .bind(batch)
        .fetch_one(pool)
        .await?;
        purged.webhooks += n as u64;
        if n < batch {
            break;
        }
    }
    loop {
        let n = sqlx::query(
            "DELETE FROM notification.attempts WHERE id IN (
                 SELECT a.id FROM notification.attempts a
                   JOIN notification.notifications n ON n.id = a.notification_id
                  WHERE a.created_at < $1 AND n.status = 'sent'
                  ORDER BY a.created_at LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        purged.mail_attempts += n;
        if (n as i64) < batch {
            break;
        }
    }
    Ok(purged)
}

/// Purge every `retention.every` until `shutdown`. Several processes may run it: batches
/// skip rows another one is deleting.
pub async fn run(pool: PgPool, retention: Retention, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(retention.every);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Ok(keep) = chrono::Duration::from_std(retention.keep) else {
            return;
        };
        match purge(&pool, Utc::now() - keep, retention.batch).await {
            Ok(Purged {
                webhooks: 0,
                mail_attempts: 0,
            }) => {}
            Ok(p) => tracing::info!(
                webhooks = p.webhooks,
                mail_attempts = p.mail_attempts,
                "purged delivery history past its retention"
            ),
            Err(e) => tracing::warn!(error = %e, "could not purge delivery history"),
        }
    }
}

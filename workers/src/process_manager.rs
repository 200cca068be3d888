//! The order ⇄ payment process manager (DESIGN.md §5): when an order is cancelled, void its
//! authorized payments and refund what was captured.
//!
//! It reads the same gap-free feed as the projections and keeps its checkpoint in its own
//! schema. A step holds the checkpoint row (`FOR UPDATE SKIP LOCKED`), so processes running
//! it take turns, never overlap. It is idempotent by causing event: each command it issues
//! records the cancellation's event id as `causation_id`, and a payment that already holds an
//! event so caused is skipped; a crash between a command and the checkpoint is therefore
//! harmless, and the domain would refuse a second void or an over-refund anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ordo_commands::history::caused_by;
use ordo_commands::{Actor, CommandError, CommandMetadata, Commands};
use ordo_domain::order::OrderEvent;
use ordo_domain::payment::{PaymentCommand, PaymentStatus};
use ordo_domain::values::Text;
use ordo_projections::feed::{self, Checkpoint, FeedEvent, Wakeup, Want};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

const NAME: &str = "order-payment";
const EVENT_TYPES: &[&str] = &["order.cancelled"];
const BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum PmError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Decode(#[from] feed::DecodeError),
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Events handled (possibly none of interest).
    Handled(usize),
    /// Nothing to do, or another process holds the step.
    Idle,
}

pub struct ProcessManager {
    pool: PgPool,
    commands: Arc<Commands>,
    /// Whether this process has made sure its checkpoint row exists.
    prepared: AtomicBool,
}

impl ProcessManager {
    pub fn new(pool: PgPool, commands: Arc<Commands>) -> Self {
        Self {
            pool,
            commands,
            prepared: AtomicBool::new(false),
        }
    }

    /// Handle the next batch of events and move the checkpoint past them.
    pub async fn step(&self) -> Result<Step, PmError> {
        // Once per process, not on every (mostly idle) step: even a no-op INSERT takes a
        // transaction id, which holds the feed's horizon back for every reader.
        if !self.prepared.load(Ordering::Relaxed) {
            sqlx::query(
                "INSERT INTO process_manager.checkpoint (name) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(NAME)
            .execute(&self.pool)
            .await?;
            self.prepared.store(true, Ordering::Relaxed);
        }
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id::text::bigint, global_position FROM process_manager.checkpoint
              WHERE name = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(NAME)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tx_id, global_position)) = row else {
            return Ok(Step::Idle);
        };
        let after = Checkpoint {
            tx_id: tx_id as u64,
            global_position,
        };
        let want = Want {
            event_types: Some(EVENT_TYPES),
            metadata: true,
        };
        let events = feed::read(&mut tx, after, BATCH, want).await?;
        let Some(last) = events.last().map(|e| e.checkpoint) else {
            return Ok(Step::Idle);
        };
        for event in events.iter().filter(|e| e.event_type == "order.cancelled") {
            let span = tracing::info_span!(
                "process_manager.handle",
                event.id = %event.event_id,
                event.r#type = %event.event_type,
            );
            if let Some(traceparent) = metadata_caused_by(event).traceparent {
                ordo_commands::telemetry::continue_trace(&span, &traceparent);
            }
            tracing::Instrument::instrument(self.order_cancelled(event), span).await?;
        }
        sqlx::query(
            "UPDATE process_manager.checkpoint
                SET tx_id = $2::text::xid8, global_position = $3, updated_at = now(), last_error = NULL
              WHERE name = $1",
        )
        .bind(NAME)
        .bind(last.tx_id.to_string())
        .bind(last.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Step::Handled(events.len()))
    }

    /// Void authorized payments and refund captured ones.
    async fn order_cancelled(&self, event: &FeedEvent) -> Result<(), PmError> {
        let OrderEvent::Cancelled(cancelled) = event.decode::<OrderEvent>()? else {
            return Ok(());
        };
        let meta = metadata_caused_by(event);
        for payment in self.commands.payments_of_order(cancelled.order_id).await? {
            let Some(payment_id) = payment.state.id else {
                continue;
            };
            if caused_by(
                &self.pool,
                "payment",
                &payment_id.to_string(),
                event.event_id,
            )
            .await?
            {
                continue;
            }
            let p = &payment.state;
            let command = match p.status {
                PaymentStatus::Authorized => PaymentCommand::Void { at: Utc::now() },
                PaymentStatus::Captured | PaymentStatus::PartiallyRefunded => {
                    let Some(amount) = p.captured.checked_sub(p.refunded).filter(|a| !a.is_zero())
                    else {
                        continue;
                    };
                    let reason = Text::parse_bounded(
                        &format!("order cancelled: {}", cancelled.reason),
                        Text::MAX_LEN,
                    )
                    .unwrap_or_else(|_| cancelled.reason.clone());
                    PaymentCommand::Refund {
                        amount,
                        reason,
                        at: Utc::now(),
                    }
                }
                _ => continue,
            };
            match self
                .commands
                .payment(payment_id, None, command, &meta)
                .await
            {
                Ok(_) => {
                    tracing::info!(payment.id = %payment_id, order.id = %cancelled.order_id, "payment settled after cancellation")
                }
                // The payment moved on meanwhile (voided, refunded, failed): nothing left to do.
                Err(CommandError::Domain(refused)) => {
                    tracing::info!(payment.id = %payment_id, reason = %refused, "payment needs nothing after cancellation")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Run steps until `shutdown` turns true, waking on new events.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wakeup = Wakeup::new(&self.pool).await;
        let mut backoff = Duration::from_millis(200);
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            match self.step().await {
                Ok(Step::Handled(_)) => backoff = Duration::from_millis(200),
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = wakeup.wait(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "process manager step failed; retrying");
                    let _ = sqlx::query(
                        "UPDATE process_manager.checkpoint SET last_error = $2 WHERE name = $1",
                    )
                    .bind(NAME)
                    .bind(e.to_string())
                    .execute(&self.pool)
                    .await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Metadata for a command the process manager issues because of `event`.
fn metadata_caused_by(event: &FeedEvent) -> CommandMetadata {
    let meta: Value = serde_json::from_str(&event.metadata).unwrap_or(Value::Null);
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
    CommandMetadata {
        correlation_id: text("correlation_id")
            .and_then(|c| Uuid::parse_str(&c).ok())
            .unwrap_or(event.event_id),
        causation_id: event.event_id,
        actor: Actor {
            key_id: None,
            name: "process-manager".into(),
            role: "system".into(),
        },
        request_id: String::new(),
        idempotency_key: None,
        // The handler span's own when traces are exported: the commands it issues chain
        // under the request that cancelled the order.
        traceparent: text("traceparent")
            .map(|tp| ordo_commands::telemetry::current_traceparent(&tp)),
    }
}

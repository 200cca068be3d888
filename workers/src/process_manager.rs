//! The order ⇄ payment process manager: when a payment is authorized,
//! captured, refunded or voided, the order records the payment status its payments now
//! amount to; when an order is cancelled, void its authorized payments and refund what was
//! captured.
//!
//! It reads the same gap-free feed as the projections and keeps its checkpoint in its own
//! schema. A step holds the checkpoint row (`FOR UPDATE SKIP LOCKED`), so processes running
//! it take turns, never overlap. It is idempotent by causing event: each command it issues
//! records the cancellation's event id as `causation_id`, and a payment that already holds an
//! event so caused is skipped; a crash between a command and the checkpoint is therefore
//! harmless, and the domain would refuse a second void or an over-refund anyway. Recording
//! the payment status is idempotent by state: the order records a status only when it
//! differs from the one it holds, and the status is always folded from the payments' current
//! state, so handling a payment event again (or an older one) records nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ordo_commands::feed::{self, Checkpoint, FeedEvent, Wakeup, Want};
use ordo_commands::history::caused_by;
use ordo_commands::{Actor, CommandError, CommandMetadata, Commands};
use ordo_domain::event::types;
use ordo_domain::order::{OrderCommand, OrderEvent};
use ordo_domain::payment::{order_payment_status, PaymentCommand, PaymentEvent, PaymentStatus};
use ordo_domain::values::Text;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

const NAME: &str = "order-payment";
const EVENT_TYPES: &[&str] = &[
    types::ORDER_CANCELLED,
    types::PAYMENT_AUTHORIZED,
    types::PAYMENT_CAPTURED,
    types::PAYMENT_REFUNDED,
    types::PAYMENT_VOIDED,
];
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
        // Once per process, not on every (mostly idle) step.
        if !self.prepared.load(Ordering::Relaxed) {
            sqlx::query(
                "INSERT INTO process_manager.checkpoint (name) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(NAME)
            .execute(&self.pool)
            .await?;
            self.prepared.store(true, Ordering::Relaxed);
        }
        // Look before locking: most steps find nothing new.
        let seen: i64 = sqlx::query_scalar(
            "SELECT global_position FROM process_manager.checkpoint WHERE name = $1",
        )
        .bind(NAME)
        .fetch_one(&self.pool)
        .await?;
        if !feed::written_after(&self.pool, Checkpoint::at(seen)).await? {
            return Ok(Step::Idle);
        }
        let mut tx = ordo_commands::db::begin(&self.pool).await?;
        let row: Option<i64> = sqlx::query_scalar(
            "SELECT global_position FROM process_manager.checkpoint
              WHERE name = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(NAME)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(position) = row else {
            return Ok(Step::Idle);
        };
        let after = Checkpoint::at(position);
        let want = Want {
            event_types: Some(EVENT_TYPES),
            metadata: true,
        };
        let events = feed::read(&mut tx, after, BATCH, want).await?;
        let Some(last) = events.last().map(|e| e.checkpoint) else {
            return Ok(Step::Idle);
        };
        // Of several payment events of one order in this batch only the last needs handling:
        // the status is folded from the payments' current state anyway.
        let orders_paid: Vec<Option<Uuid>> = events
            .iter()
            .map(|e| {
                // The feed leaves out the payloads of types this step does not want.
                let wanted = EVENT_TYPES.contains(&e.event_type.as_str());
                (wanted && e.aggregate_type == "payment")
                    .then(|| e.decode::<PaymentEvent>().map(|p| p.order_id()))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let last_payment_event: HashMap<Uuid, usize> = orders_paid
            .iter()
            .enumerate()
            .filter_map(|(i, order)| order.map(|o| (o, i)))
            .collect();
        for (i, (event, paid)) in events.iter().zip(&orders_paid).enumerate() {
            match paid {
                Some(order_id) if last_payment_event.get(order_id) == Some(&i) => {
                    handled(event, self.record_payment_status(*order_id, event)).await?
                }
                Some(_) => {}
                None if event.event_type == types::ORDER_CANCELLED => {
                    handled(event, self.order_cancelled(event)).await?
                }
                None => {}
            }
        }
        sqlx::query(
            "UPDATE process_manager.checkpoint
                SET global_position = $2, updated_at = now(), last_error = NULL
              WHERE name = $1",
        )
        .bind(NAME)
        .bind(last.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Step::Handled(events.len()))
    }

    /// The order records the payment status its payments amount to now, if it changed.
    async fn record_payment_status(
        &self,
        order_id: Uuid,
        event: &FeedEvent,
    ) -> Result<(), PmError> {
        let payments = self.commands.payments_of_order(order_id).await?;
        let order = self
            .commands
            .store()
            .load::<ordo_domain::order::Order>(&order_id.to_string())
            .await?;
        let status =
            order_payment_status(order.state.total, payments.iter().map(|(_, p)| &p.state));
        if status == order.state.payment_status {
            return Ok(());
        }
        let command = OrderCommand::RecordPaymentStatus {
            status,
            at: Utc::now(),
        };
        match self
            .commands
            .order(order_id, None, command, &metadata_caused_by(event))
            .await
        {
            Ok(_) => {
                tracing::info!(order.id = %order_id, payment_status = status.as_str(), "order payment status recorded")
            }
            // A payment of an order that does not exist (its creation was refused?) leaves
            // nothing to record.
            Err(CommandError::Domain(refused)) => {
                tracing::warn!(order.id = %order_id, reason = %refused, "payment status not recorded")
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Void authorized payments and refund captured ones.
    async fn order_cancelled(&self, event: &FeedEvent) -> Result<(), PmError> {
        let OrderEvent::Cancelled(cancelled) = event.decode::<OrderEvent>()? else {
            return Ok(());
        };
        let meta = metadata_caused_by(event);
        for (_, payment) in self.commands.payments_of_order(cancelled.order_id).await? {
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
        const POLL: Duration = Duration::from_millis(500);
        let mut wakeup = Wakeup::new(&self.pool);
        let mut cadence = feed::Cadence::default();
        let mut backoff = Duration::from_millis(200);
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            // What this step reads up to at least: anything committed later raises the known
            // head above it.
            let head_at_step = wakeup.known_head();
            match self.step().await {
                Ok(Step::Handled(read)) => {
                    backoff = Duration::from_millis(200);
                    let linger = cadence.after(read);
                    if (read as i64) < BATCH {
                        tokio::select! {
                            _ = wakeup.linger_then_wait(head_at_step, linger, POLL) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = wakeup.wait_beyond(head_at_step, POLL) => {}
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

/// Run `handling` in a span that continues the trace of the event that caused it.
async fn handled<T>(event: &FeedEvent, handling: impl Future<Output = T>) -> T {
    let span = tracing::info_span!(
        "process_manager.handle",
        event.id = %event.event_id,
        event.r#type = %event.event_type,
    );
    if let Some(traceparent) = metadata_caused_by(event).traceparent {
        ordo_runtime::telemetry::continue_trace(&span, &traceparent);
    }
    tracing::Instrument::instrument(handling, span).await
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
        idempotent: None,
        // The handler span's own when traces are exported: the commands it issues chain
        // under the request that cancelled the order.
        traceparent: text("traceparent")
            .map(|tp| ordo_runtime::telemetry::current_traceparent(&tp)),
        // Its commands act on existing streams, whatever their channel; the store records
        // each event in its stream's channel.
        channel: None,
    }
}

//! Settling received messages: together where the policy allows it, else one by one.
//!
//! A message is handled in one PostgreSQL transaction that also inserts its event id into
//! the worker's processed table: a redelivery of a handled message finds the id and is only
//! acknowledged. A failure is negatively acknowledged with the next backoff delay; on the
//! last allowed delivery (or at once, for a message that can never be handled) it becomes a
//! dead letter (see `dead_letter.rs`).
//!
//! Messages are settled together where they can be: one transaction, one statement for the
//! processed records, the policy's handler once for all fresh events, then the acks. A
//! commit (and its WAL flush) and a few round trips per message would cap a worker below the
//! event rate. What fails together is settled one by one, so that a failure is retried or
//! dead-lettered alone and never holds the others.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use ordo_runtime::telemetry;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use super::message::{delivered, Delivered};
use super::policy::HandleError;
use super::runner::{nats, Runner, WorkerError};

impl Runner {
    /// The event a message carries, or why it cannot be read (a poison message).
    pub(super) fn read(&self, message: &Message) -> Result<Delivered, String> {
        delivered(
            message.headers.as_ref(),
            message.subject.as_str(),
            &self.config.subject_prefix,
            &message.payload,
        )
    }

    /// Settle a batch of received messages.
    pub(super) async fn handle_batch(&self, messages: &[Message]) -> Result<(), WorkerError> {
        for message in self.together(messages).await? {
            self.settle(message).await?;
        }
        Ok(())
    }

    /// Handle the readable messages in one transaction; returns the messages left to
    /// settle one by one: those that cannot be read or that the policy refuses (poison,
    /// dead-lettered alone), and all of them if the shared transaction failed.
    async fn together<'m>(&self, messages: &'m [Message]) -> Result<Vec<&'m Message>, WorkerError> {
        let mut alone = Vec::new();
        let mut shared = Vec::new();
        for message in messages {
            match self.read(message) {
                Ok(event) if self.policy.check(&event).is_ok() => shared.push((message, event)),
                _ => alone.push(message),
            }
        }
        if shared.is_empty() {
            return Ok(alone);
        }
        let started = Instant::now();
        let events: Vec<&Delivered> = shared.iter().map(|(_, event)| event).collect();
        match self.handle_events(&events).await {
            Ok(_) => {
                self.observe_duration(started);
                // Each event's span, a child of the request that recorded it: the trace
                // runs from that request to this worker.
                for (_, event) in &shared {
                    event
                        .span(self.name())
                        .in_scope(|| tracing::debug!("message handled in a batch"));
                }
                for (message, _) in &shared {
                    message.ack().await.map_err(nats)?;
                }
                metrics::counter!("ordo_worker_processed_total", "worker" => self.name())
                    .increment(shared.len() as u64);
            }
            Err(e) => {
                tracing::debug!(worker = self.name(), error = %telemetry::redact(&e.to_string()), "batch failed; settling one by one");
                alone.extend(shared.into_iter().map(|(message, _)| message));
            }
        }
        Ok(alone)
    }

    /// Record the events as processed and hand those not recorded before to the policy
    /// (each once even if the batch holds it twice), in one transaction. Returns how many
    /// were fresh.
    async fn handle_events(&self, events: &[&Delivered]) -> Result<usize, HandleError> {
        let ids: BTreeSet<Uuid> = events.iter().map(|event| event.event_id).collect();
        let mut tx = ordo_commands::db::begin_by_index(&self.pool).await?;
        let mut fresh = self.record_processed(&mut tx, ids).await?;
        let fresh: Vec<&Delivered> = events
            .iter()
            .copied()
            .filter(|event| fresh.remove(&event.event_id))
            .collect();
        if !fresh.is_empty() {
            self.policy.handle(&self.pool, &mut tx, &fresh).await?;
        }
        tx.commit().await?;
        Ok(fresh.len())
    }

    fn observe_duration(&self, started: Instant) {
        metrics::histogram!("ordo_worker_handler_duration_seconds", "worker" => self.name())
            .record(started.elapsed().as_secs_f64());
    }

    /// Settle one message: acknowledged once handled, else redelivered after the backoff,
    /// or dead-lettered (poison, or its last allowed delivery).
    async fn settle(&self, message: &Message) -> Result<(), WorkerError> {
        let attempts = message.info().map(|i| i.delivered).unwrap_or(1);
        let outcome = match self.read(message) {
            Ok(event) => {
                let span = event.span(self.name());
                span.record("attempt", attempts);
                async {
                    self.policy.check(&event)?;
                    let started = Instant::now();
                    let fresh = self.handle_events(&[&event]).await? > 0;
                    if fresh {
                        self.observe_duration(started);
                    }
                    tracing::debug!(fresh, "message handled");
                    Ok(())
                }
                .instrument(span)
                .await
            }
            Err(reason) => Err(HandleError::Poison(reason)),
        };
        if outcome.is_err() {
            metrics::counter!("ordo_worker_failed_total", "worker" => self.name()).increment(1);
        }
        match outcome {
            Ok(()) => {
                message.ack().await.map_err(nats)?;
                metrics::counter!("ordo_worker_processed_total", "worker" => self.name())
                    .increment(1);
            }
            Err(HandleError::Poison(reason)) => {
                self.dead_letter(message, attempts, &reason).await?
            }
            Err(e) if attempts >= self.config.max_deliver => {
                self.dead_letter(message, attempts, &e.to_string()).await?
            }
            Err(e) => {
                let delay = self.backoff(attempts);
                let error = telemetry::redact(&e.to_string()).into_owned();
                tracing::warn!(
                    worker = self.name(),
                    attempts,
                    error,
                    "handler failed; redelivering"
                );
                message.ack_with(AckKind::Nak(delay)).await.map_err(nats)?;
            }
        }
        Ok(())
    }

    /// The delay before the redelivery that follows delivery number `attempts`.
    fn backoff(&self, attempts: i64) -> Option<Duration> {
        let index = usize::try_from(attempts - 1).unwrap_or(0);
        self.config
            .backoff
            .get(index)
            .or(self.config.backoff.last())
            .copied()
    }

    /// Insert the processed records of `ids` in one statement; returns the ids that were not
    /// recorded before (those whose effects are still to be written).
    async fn record_processed(
        &self,
        tx: &mut PgConnection,
        ids: BTreeSet<Uuid>,
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        Ok(sqlx::query_scalar(&format!(
            "INSERT INTO {} (event_id) SELECT * FROM UNNEST($1::uuid[])
             ON CONFLICT DO NOTHING RETURNING event_id",
            self.policy.processed_table()
        ))
        .bind(ids.into_iter().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect())
    }
}

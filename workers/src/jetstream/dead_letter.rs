//! Dead letters: a message that can never be handled, or that failed on its last allowed
//! delivery, is published to the dead-letter stream (`ORDO_DLQ` and subject
//! `ordo.dlq.<worker>` by default), recorded in `workers.dead_letters`, and terminated. The
//! worker publishes that dead letter itself (nats-server 2.9 drops a termination's reason).
//!
//! No row is written before the publish: the transaction around it holds only a lock.

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use async_nats::HeaderMap;
use ordo_runtime::telemetry;
use uuid::Uuid;

use super::message::{event_id_in, headers_json};
use super::runner::{nats, Runner, WorkerError};

/// A message about to become a dead letter: a delivered one, or one JetStream gave up on
/// (read back from the events stream).
pub(super) struct Letter<'a> {
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a [u8],
    pub stream_sequence: u64,
    pub attempts: i64,
}

impl Letter<'_> {
    fn event_id(&self) -> Option<Uuid> {
        event_id_in(self.headers)
    }
}

impl Runner {
    /// Dead-letter a delivered message on its last allowed delivery (or a poison one), then
    /// terminate it.
    pub(super) async fn dead_letter(
        &self,
        message: &Message,
        attempts: i64,
        reason: &str,
    ) -> Result<(), WorkerError> {
        let letter = Letter {
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            payload: &message.payload,
            stream_sequence: message.info().map(|i| i.stream_sequence).unwrap_or(0),
            attempts,
        };
        self.dead_letter_once(&letter, reason).await?;
        message.ack_with(AckKind::Term).await.map_err(nats)?;
        Ok(())
    }

    /// Publish the dead letter to the dead-letter stream and record its row, unless the
    /// worker handled the event after all or already has a dead letter for it (waiting, or
    /// for this very delivery); `false` then. The check and the insert run under a
    /// transaction-scoped lock on the event, so the two ways a message becomes a dead letter
    /// (the worker's last delivery, JetStream's max-deliveries advisory) and a repeated
    /// advisory record one.
    pub(super) async fn dead_letter_once(
        &self,
        letter: &Letter<'_>,
        reason: &str,
    ) -> Result<bool, WorkerError> {
        let event_id = letter.event_id();
        let mut tx = ordo_commands::db::begin(&self.pool).await?;
        let key = match event_id {
            Some(id) => format!("dead-letter:{}:{id}", self.name()),
            None => format!("dead-letter:{}:#{}", self.name(), letter.stream_sequence),
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let settled: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE event_id = $2)
                 OR EXISTS (SELECT 1 FROM workers.dead_letters
                             WHERE worker = $1
                               AND ((stream_sequence = $3 AND $3 > 0)
                                    OR (event_id = $2 AND redriven_at IS NULL)))",
            self.policy.processed_table()
        ))
        .bind(self.name())
        .bind(event_id)
        .bind(letter.stream_sequence as i64)
        .fetch_one(&mut *tx)
        .await?;
        if settled {
            tx.commit().await?;
            return Ok(false);
        }
        // A dead letter is its own message, not deduplicated against the original; one id
        // per delivery given up on, so that a retry after a crash between this publish and
        // the commit is dropped by the DLQ stream's duplicate window.
        let message_id = if letter.stream_sequence > 0 {
            format!(
                "dlq-{}-{}-{}",
                self.name(),
                self.config.stream,
                letter.stream_sequence
            )
        } else {
            format!("dlq-{}", Uuid::now_v7())
        };
        self.publish_dead_letter(letter, reason, message_id).await?;
        self.record_dead_letter(&mut *tx, letter, reason).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publish a dead letter to the dead-letter stream (`<dlq prefix>.<worker>`) and wait for
    /// its ack.
    async fn publish_dead_letter(
        &self,
        letter: &Letter<'_>,
        reason: &str,
        message_id: String,
    ) -> Result<(), WorkerError> {
        let mut headers = letter.headers.cloned().unwrap_or_default();
        headers.insert("ordo-dead-letter-reason", reason);
        headers.insert("ordo-original-subject", letter.subject);
        headers.insert("ordo-attempts", letter.attempts.to_string().as_str());
        headers.insert("Nats-Msg-Id", message_id.as_str());
        let subject = format!("{}.{}", self.config.dlq_prefix, self.name());
        self.js
            .publish_with_headers(subject, headers, letter.payload.to_vec().into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// The dead letter's row in `workers.dead_letters`, what operators list and redrive.
    async fn record_dead_letter(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        letter: &Letter<'_>,
        reason: &str,
    ) -> Result<(), WorkerError> {
        sqlx::query(
            "INSERT INTO workers.dead_letters (id, worker, event_id, subject, stream_sequence, attempts, error, body, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(self.name())
        .bind(letter.event_id())
        .bind(letter.subject)
        .bind(letter.stream_sequence as i64)
        .bind(letter.attempts)
        .bind(reason)
        .bind(String::from_utf8_lossy(letter.payload).into_owned())
        .bind(headers_json(letter.headers))
        .execute(db)
        .await?;
        metrics::counter!("ordo_worker_dead_lettered_total", "worker" => self.name()).increment(1);
        tracing::error!(
            worker = self.name(),
            stream_sequence = letter.stream_sequence,
            reason = %telemetry::redact(reason),
            "message dead-lettered"
        );
        Ok(())
    }
}

//! Max-deliveries advisories. A message the worker never settles (it crashed, or the
//! handler outlived `ack_wait`) is given up on by JetStream after `max_deliver` deliveries
//! with nothing but a fire-and-forget advisory. So the advisories are captured too, in
//! `<events stream>_ADVISORIES` (max-deliveries and terminated ones), and each worker
//! consumes its own max-deliveries advisories (a durable consumer named after it, filtered
//! on its name) beside its messages: it reads the message back from the events stream by
//! sequence and dead-letters it the same way, unless it handled the event after all or
//! already has a dead letter for it (both paths check under one lock, so an event gets one);
//! the advisory is acked once the dead letter is recorded.

use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{stream, Message};

use super::dead_letter::Letter;
use super::runner::{nats, Runner, WorkerError};

/// What nats-server (2.9 and later) sends on
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` (type
/// `io.nats.jetstream.advisory.v1.max_deliver`), the fields used here.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MaxDeliveriesAdvisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: i64,
}

/// What handling a max-deliveries advisory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryOutcome {
    /// The message is now a dead letter.
    DeadLettered,
    /// Nothing to do: the worker handled the event after all, or it is a dead letter already.
    AlreadySettled,
    /// The advisory is not this worker's, does not parse, or its message is gone from the
    /// events stream: nothing can be dead-lettered.
    Ignored,
}

impl Runner {
    /// Handle one max-deliveries advisory (the JSON JetStream emitted): the message it
    /// names was delivered `max_deliver` times and never settled (the worker crashed, or
    /// its handler outlived the ack wait), so JetStream gave up on it without a word to the
    /// worker. The message is read back from the events stream and dead-lettered like any
    /// other (`dead_letter_once`): handling the same advisory twice records one dead letter.
    pub async fn handle_advisory(&self, payload: &[u8]) -> Result<AdvisoryOutcome, WorkerError> {
        let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(payload) {
            Ok(advisory) => advisory,
            Err(e) => {
                tracing::warn!(worker = self.name(), error = %e, "unreadable max-deliveries advisory; ignored");
                return Ok(AdvisoryOutcome::Ignored);
            }
        };
        if advisory.stream != self.config.stream || advisory.consumer != self.name() {
            return Ok(AdvisoryOutcome::Ignored);
        }
        let original = match self.events.get_raw_message(advisory.stream_seq).await {
            Ok(original) => original,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                tracing::error!(
                    worker = self.name(),
                    stream_sequence = advisory.stream_seq,
                    "a message JetStream gave up on is no longer in the events stream; it cannot be dead-lettered"
                );
                return Ok(AdvisoryOutcome::Ignored);
            }
            Err(e) => return Err(nats(e)),
        };
        let letter = Letter {
            subject: original.subject.as_str(),
            headers: Some(&original.headers),
            payload: &original.payload,
            stream_sequence: advisory.stream_seq,
            attempts: advisory.deliveries,
        };
        let reason = format!(
            "not settled after {} deliveries (max deliveries reached)",
            advisory.deliveries
        );
        Ok(if self.dead_letter_once(&letter, &reason).await? {
            AdvisoryOutcome::DeadLettered
        } else {
            AdvisoryOutcome::AlreadySettled
        })
    }

    /// Settle one captured advisory: acknowledged once what it asks for is durable (or
    /// there is nothing to do), else redelivered after a pause.
    pub(super) async fn settle_advisory(&self, message: &Message) -> Result<(), WorkerError> {
        match self.handle_advisory(&message.payload).await {
            Ok(_) => message.ack().await.map_err(nats),
            Err(e) => {
                tracing::warn!(worker = self.name(), error = %e, "max-deliveries advisory not handled; retrying");
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
                    .map_err(nats)
            }
        }
    }
}

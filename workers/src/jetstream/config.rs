//! A worker's JetStream settings: the events stream, the dead-letter stream, redelivery.

use std::time::Duration;

use async_nats::jetstream::stream;

use crate::nats::NatsSettings;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub dlq_stream: String,
    pub dlq_prefix: String,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: i64,
    /// Delay before each redelivery (the last one repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivered message may stay unsettled before JetStream delivers it again
    /// (or, after `max_deliver` deliveries, gives up and emits a max-deliveries advisory).
    pub ack_wait: Duration,
}

impl WorkerConfig {
    /// The default settings on the server at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self::over(&NatsSettings::new(nats_url))
    }

    /// The workers' settings over `nats`'s server and events stream; the dead-letter stream
    /// and redelivery at their defaults.
    pub fn over(nats: &NatsSettings) -> Self {
        Self {
            nats_url: nats.url.clone(),
            stream: nats.stream.clone(),
            subject_prefix: nats.subject_prefix.clone(),
            dlq_stream: crate::nats::DEFAULT_DLQ_STREAM.into(),
            dlq_prefix: crate::nats::DEFAULT_DLQ_SUBJECT_PREFIX.into(),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(30),
        }
    }

    /// The stream that captures the events stream's dead-letter advisories:
    /// `<events stream>_ADVISORIES`.
    pub fn advisory_stream(&self) -> String {
        format!("{}_ADVISORIES", self.stream)
    }

    /// The subject of the advisory JetStream emits when `consumer` gave up on a message of
    /// the events stream after `max_deliver` deliveries.
    pub fn max_deliveries_subject(&self, consumer: &str) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{consumer}",
            self.stream
        )
    }

    pub(super) fn advisory_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.advisory_stream(),
            subjects: vec![
                self.max_deliveries_subject("*"),
                format!(
                    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.*",
                    self.stream
                ),
            ],
            storage: stream::StorageType::File,
            max_age: ADVISORY_MAX_AGE,
            ..Default::default()
        }
    }
}

/// How long captured advisories are kept: longer than a worker is ever expected to be down.
const ADVISORY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

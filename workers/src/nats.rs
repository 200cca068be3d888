//! Where Ordo's NATS traffic goes: one settings struct that the relay ([`crate::RelayConfig`])
//! and the workers ([`crate::WorkerConfig`]) are built over, and the defaults, spelled here
//! only (the root's configuration uses them as its flags' defaults).

/// `NATS_URL`'s default: a local server.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The JetStream stream the relay publishes every event to (`ORDO_NATS_STREAM`).
pub const DEFAULT_STREAM: &str = "ORDO_EVENTS";
/// Subjects are `<prefix>.<aggregate>.<event>` (`ORDO_NATS_SUBJECT_PREFIX`).
pub const DEFAULT_SUBJECT_PREFIX: &str = "ordo.events";
/// The JetStream stream of the workers' dead letters (`ORDO_NATS_DLQ_STREAM`).
pub const DEFAULT_DLQ_STREAM: &str = "ORDO_DLQ";
/// Dead letters are published to `<prefix>.<worker>` (`ORDO_NATS_DLQ_SUBJECT_PREFIX`).
pub const DEFAULT_DLQ_SUBJECT_PREFIX: &str = "ordo.dlq";

/// The server and the events stream: what the relay publishes to and the workers read.
/// Tests give each run its own stream and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
}

impl NatsSettings {
    /// The default stream and prefix on the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: DEFAULT_STREAM.into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

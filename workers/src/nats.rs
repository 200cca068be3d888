//! Where Ordo's NATS traffic goes: one settings struct that the relay ([`crate::RelayConfig`])
//! and the workers ([`crate::WorkerConfig`]) are built over, and the defaults, spelled here
//! only (the root's configuration uses them as its flags' defaults); and how a stream is made
//! to exist ([`ensure_stream`]).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

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

/// The duplicate window nats-server gives a stream that names none.
const SERVER_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Make sure the stream `wanted` describes exists with its settings, and return it: look it
/// up, create it when it is missing, and update it only when a setting Ordo chooses differs.
///
/// Not async-nats's `create_or_update_stream`, which sends an update first and a create when
/// the stream is missing. nats-server 2.9.10 (Debian 12's) crashes, a nil pointer in
/// `updateWithAdvisory`, when an update of a stream arrives while another connection is
/// creating it; the relay and the workers of one process start at the same time, and did
/// that on every first start. `ordo serve` started on new streams crashed the server within
/// 23 to 112 starts; with this, not in 300 (ADR 0024). A create that lost the race to another
/// connection's is looked up again.
pub async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, async_nats::Error> {
    let mut lost = 0;
    loop {
        match js.get_stream(&wanted.name).await {
            Ok(found) if chosen(&found.cached_info().config) == chosen(&wanted) => {
                return Ok(found)
            }
            // Looked up again after the update, so that the stream returned shows its settings.
            Ok(_) => {
                js.update_stream(&wanted).await?;
                return Ok(js.get_stream(&wanted.name).await?);
            }
            Err(e) if missing(&e) => match js.create_stream(wanted.clone()).await {
                Ok(created) => return Ok(created),
                Err(e) if lost == 2 => return Err(e.into()),
                // Another connection may have just created it: look again.
                Err(_) => lost += 1,
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// The settings Ordo chooses for a stream. The server reports the others filled in with its
/// defaults, so a whole configuration would never compare equal.
fn chosen(config: &stream::Config) -> impl PartialEq + '_ {
    let window = match config.duplicate_window {
        Duration::ZERO => SERVER_DUPLICATE_WINDOW,
        window => window,
    };
    (
        &config.subjects,
        config.storage,
        config.retention,
        config.max_age,
        window,
    )
}

fn missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

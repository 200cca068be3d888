//! The relay: the event log, in commit order, onto the JetStream stream `ORDO_EVENTS`
//! (DESIGN.md §6).
//!
//! A step reads a batch from the gap-free feed, publishes every event with its headers
//! without waiting (many acks in flight), then awaits every ack; only when all are in does
//! it move its checkpoint. A failure anywhere leaves the checkpoint where it was and the
//! batch is published again later: JetStream drops the repeats by `Nats-Msg-Id` (the event
//! id), so nothing is lost and nothing is duplicated downstream. Steps hold the checkpoint
//! row (`FOR UPDATE SKIP LOCKED`), so relays in several processes take turns.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use ordo_commands::telemetry;
use ordo_projections::feed::{self, Checkpoint, FeedEvent, Wakeup, Want};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;

/// How soon to read again when events are written but not final yet.
const PENDING_RECHECK: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub nats_url: String,
    /// `ORDO_EVENTS` in production; tests use their own.
    pub stream: String,
    /// `ordo.events` in production: subjects are `<prefix>.<aggregate>.<event>`.
    pub subject_prefix: String,
    pub batch_size: i64,
    /// How long to wait for each publish ack.
    pub ack_timeout: Duration,
}

impl RelayConfig {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream: "ORDO_EVENTS".into(),
            subject_prefix: "ordo.events".into(),
            batch_size: 500,
            ack_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("nats: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> RelayError {
    RelayError::Nats(e.to_string())
}

pub struct Relay {
    pool: PgPool,
    config: RelayConfig,
    js: jetstream::Context,
}

/// The event stream's configuration: file storage, one subject tree, a two-minute window
/// in which a repeated `Nats-Msg-Id` is dropped. The relay and the workers both create it
/// if it is missing, whichever starts first.
pub fn events_stream(name: &str, subject_prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject_prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The headers of one event's message.
pub fn headers(event: &FeedEvent) -> HeaderMap {
    let meta: Value = serde_json::from_str(&event.metadata).unwrap_or(Value::Null);
    let text = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut h = HeaderMap::new();
    let id = event.event_id.to_string();
    h.insert("Nats-Msg-Id", id.as_str());
    h.insert("ce-specversion", "1.0");
    h.insert("ce-id", id.as_str());
    h.insert(
        "ce-type",
        format!("ordo.{}.v{}", event.event_type, event.event_version).as_str(),
    );
    h.insert("ce-source", "ordo");
    h.insert("ce-subject", event.aggregate_id.as_str());
    h.insert("ce-time", event.recorded_at.to_rfc3339().as_str());
    h.insert("content-type", "application/json");
    h.insert(
        "ordo-position",
        event.checkpoint.global_position.to_string().as_str(),
    );
    h.insert("ordo-sequence", event.sequence.to_string().as_str());
    for (header, key) in [
        ("traceparent", "traceparent"),
        ("ordo-correlation-id", "correlation_id"),
        ("ordo-causation-id", "causation_id"),
    ] {
        let value = text(key);
        if !value.is_empty() {
            h.insert(header, value.as_str());
        }
    }
    h
}

/// [`headers`], with the trace carried on: when traces are exported, a `relay.publish` span
/// (a child of the request that recorded the event) stands between the request and the
/// workers, and the message names it as the parent; otherwise the stored traceparent goes on
/// unchanged.
fn traced_headers(event: &FeedEvent, subject: &str) -> HeaderMap {
    let mut headers = headers(event);
    let Some(stored) = headers.get("traceparent").map(|v| v.as_str().to_owned()) else {
        return headers;
    };
    let span = tracing::info_span!(
        "relay.publish",
        event.id = %event.event_id,
        event.r#type = %event.event_type,
        messaging.destination = subject,
    );
    telemetry::continue_trace(&span, &stored);
    if let Some(own) = telemetry::traceparent_of(&span) {
        headers.insert("traceparent", own.as_str());
    }
    headers
}

/// The message body: the event's fields (the stored serde tag repeats `ce-type`).
pub fn body(event: &FeedEvent) -> Vec<u8> {
    match serde_json::from_str::<Value>(&event.payload) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("type");
            serde_json::to_vec(&fields).unwrap_or_default()
        }
        _ => event.payload.clone().into_bytes(),
    }
}

impl Relay {
    /// Connect (retrying in the background if NATS is down) and make sure the stream exists.
    pub async fn connect(pool: PgPool, config: RelayConfig) -> Result<Self, RelayError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .map_err(nats)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(1024)
            .backpressure_on_inflight(true)
            .build(client);
        // The checkpoint row, once here rather than on every step: even a no-op INSERT takes
        // a transaction id, which holds the feed's horizon back for every reader.
        sqlx::query("INSERT INTO relay.checkpoint (stream) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&config.stream)
            .execute(&pool)
            .await?;
        Ok(Self { pool, config, js })
    }

    /// Create the stream if it is missing (file storage, one subject tree).
    pub async fn ensure_stream(&self) -> Result<(), RelayError> {
        self.js
            .get_or_create_stream(events_stream(
                &self.config.stream,
                &self.config.subject_prefix,
            ))
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Publish the next batch; the checkpoint moves only once JetStream acknowledged all.
    pub async fn step(&self) -> Result<usize, RelayError> {
        // Locking the checkpoint row takes a transaction id, and an open transaction id
        // holds the feed's horizon back for every reader: an empty step takes none.
        if !self.ready().await? {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id::text::bigint, global_position FROM relay.checkpoint
              WHERE stream = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(&self.config.stream)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tx_id, global_position)) = row else {
            return Ok(0);
        };
        let after = Checkpoint {
            tx_id: tx_id as u64,
            global_position,
        };
        let want = Want {
            event_types: None,
            metadata: true,
        };
        let events = feed::read(&mut tx, after, self.config.batch_size, want).await?;
        let Some(last) = events.last().map(|e| e.checkpoint) else {
            return Ok(0);
        };
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let subject = format!("{}.{}", self.config.subject_prefix, event.event_type);
            let headers = traced_headers(event, &subject);
            let ack = self
                .js
                .publish_with_headers(subject, headers, body(event).into())
                .await
                .map_err(nats)?;
            acks.push(ack);
        }
        // Await every ack: a dropped ack future would hide its error.
        for ack in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(nats)?;
        }
        sqlx::query(
            "UPDATE relay.checkpoint
                SET tx_id = $2::text::xid8, global_position = $3, published = published + $4,
                    updated_at = now(), last_error = NULL
              WHERE stream = $1",
        )
        .bind(&self.config.stream)
        .bind(last.tx_id.to_string())
        .bind(last.global_position)
        .bind(events.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("ordo_relay_published_total").increment(events.len() as u64);
        Ok(events.len())
    }

    /// Whether final events wait beyond the checkpoint.
    async fn ready(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM event_store.events e, relay.checkpoint c
                             WHERE c.stream = $1
                               AND (e.tx_id, e.global_position) > (c.tx_id, c.global_position)
                               AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()))",
        )
        .bind(&self.config.stream)
        .fetch_one(&self.pool)
        .await
    }

    /// Whether events are written beyond the checkpoint, final or not.
    async fn pending(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM event_store.events e, relay.checkpoint c
                             WHERE c.stream = $1
                               AND (e.tx_id, e.global_position) > (c.tx_id, c.global_position))",
        )
        .bind(&self.config.stream)
        .fetch_one(&self.pool)
        .await
    }

    /// Publish until `shutdown` turns true; a NATS outage only delays (commands go on).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wakeup = Wakeup::new(&self.pool).await;
        let mut backoff = Duration::from_millis(200);
        let mut stream_ready = false;
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let result = if stream_ready {
                self.step().await
            } else {
                self.ensure_stream().await.map(|()| {
                    stream_ready = true;
                    0
                })
            };
            match result {
                Ok(0) if stream_ready => {
                    // Written but not final yet (an older transaction is still open): its
                    // commit may send no notification of its own, so look again shortly.
                    let pause = async {
                        if self.pending().await.unwrap_or(false) {
                            tokio::time::sleep(PENDING_RECHECK).await;
                        } else {
                            wakeup.wait(Duration::from_millis(500)).await;
                        }
                    };
                    tokio::select! {
                        _ = pause => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, stream = %self.config.stream, "relay step failed; retrying");
                    let _ = sqlx::query(
                        "UPDATE relay.checkpoint SET last_error = $2 WHERE stream = $1",
                    )
                    .bind(&self.config.stream)
                    .bind(e.to_string())
                    .execute(&self.pool)
                    .await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

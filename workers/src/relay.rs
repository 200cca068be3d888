//! The relay: the event log, in commit order, onto the JetStream stream `ORDO_EVENTS`
//! (docs/API.md, "NATS").
//!
//! One relay leads across processes: the one whose session holds the stream's advisory
//! lock; the others stand by and take over when that session ends.
//!
//! The leader publishes events as soon as they commit: positions are handed out in commit
//! order (see [`feed`]), so the stored *line* (the position of the last event JetStream
//! acknowledged) is all it needs to know. Each read publishes every event without waiting
//! (many acks in flight), then awaits every ack; only then does the line move. A failure
//! anywhere leaves it where it was and the events are published again later: JetStream drops
//! the repeats by `Nats-Msg-Id` (the event id), so nothing is lost and nothing is duplicated
//! downstream. The line is written with `synchronous_commit = off`: a line lost in a crash of
//! PostgreSQL only means publishing again.

use std::borrow::Cow;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, HeaderName};
use ordo_commands::feed::{self, Checkpoint, FeedEvent, Wakeup, Want};
use ordo_commands::leader;
use ordo_runtime::telemetry;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// How long a reader waits for a wake-up (a commit's NOTIFY) before it reads anyway.
const POLL: Duration = Duration::from_millis(500);
/// How often a standby tries the lock, and an idle leader proves its session is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the leader refreshes its position and lag gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

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
    /// The default settings on the server at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self::over(&crate::NatsSettings::new(nats_url))
    }

    /// The relay's settings over `nats`'s server and events stream.
    pub fn over(nats: &crate::NatsSettings) -> Self {
        Self {
            nats_url: nats.url.clone(),
            stream: nats.stream.clone(),
            subject_prefix: nats.subject_prefix.clone(),
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
/// in which a repeated `Nats-Msg-Id` is dropped. The relay and the workers both create it,
/// or update it to this, on start.
pub fn events_stream(name: &str, subject_prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject_prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// How many events of the log the relay of `stream` has not published yet; `None` before it
/// ever ran (it has no line yet).
pub async fn lag(pool: &PgPool, stream: &str) -> Result<Option<i64>, sqlx::Error> {
    let line: Option<i64> =
        sqlx::query_scalar("SELECT global_position FROM relay.checkpoint WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await?;
    let Some(line) = line else { return Ok(None) };
    let (events, _) = feed::lag(pool, Checkpoint::at(line)).await?;
    Ok(Some(events))
}

/// The header naming an event's sales channel.
pub const CHANNEL_HEADER: &str = "ce-ordochannel";

/// A message header's name, known when compiling: a name given as text is validated and
/// copied into an allocation of its own on every insert and every lookup (the workers'
/// lookups alone were 7 % of their CPU over a backlog: five per message, three workers for
/// every event).
pub(crate) const fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// What the relay carries on from an event's metadata into its message's headers (read
/// borrowed from the stored text: none of the metadata's other fields is built).
#[derive(Default, serde::Deserialize)]
struct Carried<'a> {
    #[serde(borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    causation_id: Option<Cow<'a, str>>,
}

/// The headers of one event's message.
pub fn headers(event: &FeedEvent) -> HeaderMap {
    let carried: Carried = serde_json::from_str(&event.metadata).unwrap_or_default();
    let mut h = HeaderMap::new();
    let id = event.event_id.to_string();
    h.insert(header("Nats-Msg-Id"), id.as_str());
    h.insert(header("ce-specversion"), "1.0");
    h.insert(header("ce-id"), id.as_str());
    h.insert(
        header("ce-type"),
        format!("ordo.{}.v{}", event.event_type, event.event_version).as_str(),
    );
    h.insert(header("ce-source"), "ordo");
    h.insert(header("ce-subject"), event.aggregate_id.as_str());
    h.insert(header("ce-time"), event.recorded_at.to_rfc3339().as_str());
    h.insert(header("content-type"), "application/json");
    h.insert(
        header("ordo-position"),
        event.checkpoint.global_position.to_string().as_str(),
    );
    h.insert(header("ordo-sequence"), event.sequence.to_string().as_str());
    // The stream's sales channel, as a CloudEvents extension attribute (binary mode).
    h.insert(header(CHANNEL_HEADER), event.channel.as_str());
    for (name, value) in [
        ("traceparent", &carried.traceparent),
        ("ordo-correlation-id", &carried.correlation_id),
        ("ordo-causation-id", &carried.causation_id),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            h.insert(header(name), value);
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
    let Some(stored) = headers
        .get(header("traceparent"))
        .map(|v| v.as_str().to_owned())
    else {
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
        headers.insert(header("traceparent"), own.as_str());
    }
    headers
}

/// The message body: the event's fields (the stored serde tag repeats `ce-type`).
pub fn body(event: &FeedEvent) -> Vec<u8> {
    match fields(&event.payload) {
        Some(fields) => serde_json::to_vec(&fields).unwrap_or_default(),
        None => event.payload.clone().into_bytes(),
    }
}

/// A stored payload's fields without its serde tag: what a message body carries (`None`
/// when the payload is not a JSON object; its body is then the payload as it is).
pub fn fields(payload: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("type");
            Some(Value::Object(fields))
        }
        _ => None,
    }
}

/// What one read did.
#[derive(Debug, Default, Clone, Copy)]
struct Advance {
    published: usize,
    /// The read was cut at the batch size: more may be waiting.
    full: bool,
}

impl Relay {
    /// Connect (retrying in the background if NATS is down) and make sure the checkpoint row
    /// exists.
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
        // The checkpoint row, once here rather than on every step.
        sqlx::query("INSERT INTO relay.checkpoint (stream) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&config.stream)
            .execute(&pool)
            .await?;
        Ok(Self { pool, config, js })
    }

    /// Create the stream, or update it to this configuration (file storage, one subject
    /// tree, the duplicate window).
    pub async fn ensure_stream(&self) -> Result<(), RelayError> {
        crate::nats::ensure_stream(
            &self.js,
            events_stream(&self.config.stream, &self.config.subject_prefix),
        )
        .await
        .map_err(nats)?;
        Ok(())
    }

    /// Publish the next batch of events after the stored line, and move the line once
    /// JetStream acknowledged them all. For tools and tests that drive the relay by hand; a
    /// running relay ([`Relay::run`]) leads. Two callers at once publish some events twice,
    /// which JetStream drops.
    pub async fn step(&self) -> Result<usize, RelayError> {
        let mut line = self.stored_line().await?;
        let mut conn = self.pool.acquire().await?;
        let advance = self.advance(&mut conn, &mut line).await?;
        if advance.published > 0 {
            self.store_line(&mut conn, line, advance).await?;
        }
        self.export_gauges(line).await;
        Ok(advance.published)
    }

    async fn stored_line(&self) -> Result<Checkpoint, sqlx::Error> {
        let position: i64 =
            sqlx::query_scalar("SELECT global_position FROM relay.checkpoint WHERE stream = $1")
                .bind(&self.config.stream)
                .fetch_one(&self.pool)
                .await?;
        Ok(Checkpoint::at(position))
    }

    /// Read and publish the events beyond `line`, and move it past them.
    async fn advance(
        &self,
        conn: &mut PgConnection,
        line: &mut Checkpoint,
    ) -> Result<Advance, RelayError> {
        let want = Want {
            event_types: None,
            metadata: true,
        };
        let batch = self.config.batch_size;
        let events = feed::read(conn, *line, batch, want).await?;
        self.publish(&events).await?;
        if let Some(last) = events.last() {
            *line = last.checkpoint;
        }
        Ok(Advance {
            published: events.len(),
            full: events.len() as i64 >= batch,
        })
    }

    /// Publish every event without waiting, then await every ack.
    async fn publish(&self, events: &[FeedEvent]) -> Result<(), RelayError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
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
        if !events.is_empty() {
            metrics::counter!("ordo_relay_published_total").increment(events.len() as u64);
        }
        Ok(())
    }

    /// Store the line (it only ever moves forward) and count what was published.
    async fn store_line(
        &self,
        conn: &mut PgConnection,
        line: Checkpoint,
        advance: Advance,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE relay.checkpoint
                SET global_position = greatest(global_position, $2),
                    published = published + $3, updated_at = now(), last_error = NULL
              WHERE stream = $1",
        )
        .bind(&self.config.stream)
        .bind(line.global_position)
        .bind(advance.published as i64)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn record_error(&self, error: &RelayError) {
        tracing::warn!(error = %error, stream = %self.config.stream, "relay step failed; retrying");
        let _ = sqlx::query("UPDATE relay.checkpoint SET last_error = $2 WHERE stream = $1")
            .bind(&self.config.stream)
            .bind(error.to_string())
            .execute(&self.pool)
            .await;
    }

    /// The stream's advisory-lock key, the same in every process.
    async fn lock_key(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT hashtextextended('ordo relay ' || $1, 0)")
            .bind(&self.config.stream)
            .fetch_one(&self.pool)
            .await
    }

    /// Publish until `shutdown` turns true: stand by until this process holds the stream's
    /// advisory lock, then lead until the lock's session ends. A NATS outage only delays
    /// (commands go on).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let pause = match self.try_lead(&mut shutdown).await {
                Ok(true) => Duration::ZERO,
                Ok(false) => HEARTBEAT,
                Err(e) => {
                    self.record_error(&e).await;
                    HEARTBEAT
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Lead if the lock is free: `Ok(false)` when another process holds it.
    async fn try_lead(&self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, RelayError> {
        let key = self.lock_key().await?;
        let Some(mut lock) = leader::try_lock(&self.pool, key).await? else {
            return Ok(false);
        };
        tracing::info!(stream = %self.config.stream, "leading the relay");
        let result = self.lead(&mut lock.conn, shutdown).await;
        lock.release().await;
        result.map(|()| true)
    }

    /// The relay's line and lag (head − line) as gauges, kept by the leader as it goes, so a
    /// scrape of `/metrics` reads no database.
    async fn export_gauges(&self, line: Checkpoint) {
        metrics::gauge!("ordo_relay_position").set(line.global_position as f64);
        match feed::head(&self.pool).await {
            Ok(head) => metrics::gauge!("ordo_relay_lag_events")
                .set((head - line.global_position).max(0) as f64),
            Err(e) => tracing::debug!(error = %e, "relay lag not measured"),
        }
    }

    /// Publish as the leader until `shutdown`, or until the lock's session fails (then
    /// another process may lead: return and try for the lock again).
    async fn lead(
        &self,
        lock: &mut PgConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        // The line is written on the lock's session, which proves the lock is still held.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut *lock)
            .await?;
        let mut wakeup = Wakeup::new(&self.pool);
        let mut cadence = feed::Cadence::default();
        let mut line = self.stored_line().await?;
        let mut stream_ready = false;
        let mut backoff = Duration::from_millis(200);
        let mut last_beat = Instant::now();
        let mut last_gauges: Option<Instant> = None;
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            if last_gauges.is_none_or(|t| t.elapsed() >= GAUGES_EVERY) {
                self.export_gauges(line).await;
                last_gauges = Some(Instant::now());
            }
            let stored = line;
            // What this step reads up to at least: anything committed later raises the known
            // head above it.
            let head_at_step = wakeup.known_head();
            let result = if stream_ready {
                // Reads go through the lock's session too: the pool is the commands', and
                // waiting in its queue behind them would be on every event's path.
                self.advance(lock, &mut line).await
            } else {
                self.ensure_stream().await.map(|()| {
                    stream_ready = true;
                    Advance {
                        full: true, // read at once
                        ..Advance::default()
                    }
                })
            };
            let advance = match result {
                Ok(advance) => advance,
                // The lock's session (reads go through it) may be gone, and the lock with it:
                // take it again before anything else.
                Err(e @ RelayError::Db(_)) => return Err(e),
                Err(e) => {
                    self.record_error(&e).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            if advance.published > 0 || line != stored {
                self.store_line(lock, line, advance).await?;
                last_beat = Instant::now();
            } else if last_beat.elapsed() >= HEARTBEAT {
                sqlx::query("SELECT 1").execute(&mut *lock).await?;
                last_beat = Instant::now();
            }
            let linger = cadence.after(advance.published);
            if advance.full {
                continue;
            }
            // Wait for the next commit's wake-up rather than read to find out; after a read
            // that published, linger first, as long as the flow calls for.
            let linger = if advance.published > 0 {
                linger
            } else {
                Duration::ZERO
            };
            let seen = head_at_step.max(line.global_position);
            tokio::select! {
                _ = wakeup.linger_then_wait(seen, linger, POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
        Ok(())
    }
}

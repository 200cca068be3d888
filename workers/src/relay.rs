//! The relay: the event log, in commit order, onto the JetStream stream `ORDO_EVENTS`
//! (DESIGN.md §6).
//!
//! One relay leads across processes: the one whose session holds the stream's advisory
//! lock; the others stand by and take over when that session ends.
//!
//! The leader publishes an event as soon as it is committed, not only once it is final
//! (below the feed's horizon, see [`feed`]): waiting for finality would add the duration of
//! the oldest transaction still open anywhere on the server to every event's latency. It
//! keeps two marks:
//! - the *line*, stored in `relay.checkpoint`: every event at or below it is published and
//!   no event can ever appear below it again;
//! - *ahead*, in memory: the events it published beyond the line. An older transaction may
//!   still commit an event below them; the next read finds it (it is beyond the line and not
//!   ahead) and publishes it then, which is its commit order.
//!
//! Each read publishes every event without waiting (many acks in flight), then awaits every
//! ack; only then do the line and the ahead set move. A failure anywhere leaves both where
//! they were and the events are published again later: JetStream drops the repeats by
//! `Nats-Msg-Id` (the event id), and a leader that restarts forgets its ahead set and
//! publishes those events again the same way, so nothing is lost and nothing is duplicated
//! downstream. The line is written with `synchronous_commit = off`: a line lost in a crash
//! of PostgreSQL only means publishing again.

use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use ordo_commands::feed::{self, Checkpoint, FeedEvent, Finality, Wakeup, Want};
use ordo_commands::leader;
use ordo_commands::telemetry;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// How long a reader waits for a wake-up (a commit's NOTIFY) before it reads anyway.
const POLL: Duration = Duration::from_millis(500);
/// How soon the leader reads again while events it published are not final yet: only the
/// line waits for them, not the events, so this is not on any event's path.
const LINE_RECHECK: Duration = Duration::from_millis(20);
/// How often a standby tries the lock, and an idle leader proves its session is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);

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
    /// At most this many events published ahead of the line; beyond it the leader waits for
    /// the line (a transaction left open for long), as a relay that only publishes final
    /// events would.
    pub max_ahead: usize,
}

impl RelayConfig {
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream: "ORDO_EVENTS".into(),
            subject_prefix: "ordo.events".into(),
            batch_size: 500,
            ack_timeout: Duration::from_secs(5),
            max_ahead: 4096,
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

/// What the leader has published: the line and the events beyond it (see the module doc).
#[derive(Debug, Default)]
struct Cursor {
    line: Checkpoint,
    ahead: BTreeSet<Checkpoint>,
}

/// What one read did.
#[derive(Debug, Default, Clone, Copy)]
struct Advance {
    published: usize,
    /// The read was cut at the batch size: more may be waiting.
    full: bool,
}

impl Cursor {
    /// Move the line as far as it may go now that everything below `horizon` has ended:
    /// past every event published so far that is final, as long as nothing unread can
    /// still lie below it. `read_to`: the last event of a read that was cut at the batch
    /// size (events beyond it were not read); `None` when the read saw everything.
    fn settle(&mut self, horizon: u64, read_to: Option<Checkpoint>) {
        while let Some(&first) = self.ahead.first() {
            let unread_below = read_to.is_some_and(|last| first > last);
            if first.tx_id >= horizon || unread_below {
                break;
            }
            self.line = first;
            self.ahead.remove(&first);
        }
    }
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
        // The checkpoint row, once here rather than on every step: even a no-op INSERT takes
        // a transaction id, which holds the feed's horizon back for every reader.
        sqlx::query("INSERT INTO relay.checkpoint (stream) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&config.stream)
            .execute(&pool)
            .await?;
        Ok(Self { pool, config, js })
    }

    /// Create the stream, or update it to this configuration (file storage, one subject
    /// tree, the duplicate window).
    pub async fn ensure_stream(&self) -> Result<(), RelayError> {
        self.js
            .create_or_update_stream(events_stream(
                &self.config.stream,
                &self.config.subject_prefix,
            ))
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Publish the next batch of final events after the stored line, and move the line once
    /// JetStream acknowledged them all. For tools and tests that drive the relay by hand; a
    /// running relay ([`Relay::run`]) leads and publishes events as soon as they commit.
    /// Two callers at once publish some events twice, which JetStream drops.
    pub async fn step(&self) -> Result<usize, RelayError> {
        let mut cursor = Cursor {
            line: self.stored_line().await?,
            ahead: BTreeSet::new(),
        };
        let mut conn = self.pool.acquire().await?;
        let advance = self.advance(&mut conn, &mut cursor, false).await?;
        if advance.published > 0 {
            self.store_line(&mut conn, &cursor, advance).await?;
        }
        Ok(advance.published)
    }

    async fn stored_line(&self) -> Result<Checkpoint, sqlx::Error> {
        let (tx_id, global_position): (i64, i64) = sqlx::query_as(
            "SELECT tx_id::text::bigint, global_position FROM relay.checkpoint WHERE stream = $1",
        )
        .bind(&self.config.stream)
        .fetch_one(&self.pool)
        .await?;
        Ok(Checkpoint {
            tx_id: tx_id as u64,
            global_position,
        })
    }

    /// Read and publish what `cursor` does not have yet: every committed event beyond the
    /// line when `early`, else only the final ones. Reads take no transaction id, so they
    /// never hold the feed's horizon back.
    async fn advance(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Cursor,
        early: bool,
    ) -> Result<Advance, RelayError> {
        let want = Want {
            event_types: None,
            metadata: true,
        };
        // At most `max_ahead` beyond the line (a transaction left open for long): past it,
        // wait for the line instead.
        let room = self.config.max_ahead.saturating_sub(cursor.ahead.len());
        let (finality, batch) = if early && room > 0 {
            let room = i64::try_from(room).unwrap_or(i64::MAX);
            (Finality::Committed, self.config.batch_size.min(room))
        } else {
            (Finality::Final, self.config.batch_size)
        };
        let skip: Vec<i64> = cursor.ahead.iter().map(|c| c.global_position).collect();
        // The horizon before the read: every transaction below it had ended when the read
        // began, so every event below it that the read could reach, it saw.
        let horizon = feed::horizon(&mut *conn).await?;
        let events = feed::read_beyond(conn, cursor.line, &skip, batch, want, finality).await?;
        let full = events.len() as i64 >= batch;
        self.publish(&events).await?;
        cursor.ahead.extend(events.iter().map(|e| e.checkpoint));
        if let (Finality::Final, Some(last)) = (finality, events.last()) {
            // Every final event up to the last one read is published now (read, or ahead
            // before), and everything up to it is final.
            cursor.line = last.checkpoint;
            cursor.ahead.retain(|c| *c > last.checkpoint);
        }
        let read_to = full.then(|| events.last().map(|e| e.checkpoint)).flatten();
        cursor.settle(horizon, read_to);
        Ok(Advance {
            published: events.len(),
            full,
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
        cursor: &Cursor,
        advance: Advance,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE relay.checkpoint
                SET (tx_id, global_position) =
                        (SELECT * FROM (VALUES (tx_id, global_position), ($2::text::xid8, $3)) v(t, p)
                          ORDER BY t DESC, p DESC LIMIT 1),
                    published = published + $4, updated_at = now(), last_error = NULL
              WHERE stream = $1",
        )
        .bind(&self.config.stream)
        .bind(cursor.line.tx_id.to_string())
        .bind(cursor.line.global_position)
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
        let mut wakeup = Wakeup::new(&self.pool).await;
        let mut cursor = Cursor {
            line: self.stored_line().await?,
            ahead: BTreeSet::new(),
        };
        let mut stream_ready = false;
        let mut backoff = Duration::from_millis(200);
        let mut last_beat = Instant::now();
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let stored = cursor.line;
            let result = if stream_ready {
                // Reads go through the lock's session too: the pool is the commands', and
                // waiting in its queue behind them would be on every event's path.
                self.advance(lock, &mut cursor, true).await
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
            if advance.published > 0 || cursor.line != stored {
                self.store_line(lock, &cursor, advance).await?;
                last_beat = Instant::now();
            } else if last_beat.elapsed() >= HEARTBEAT {
                sqlx::query("SELECT 1").execute(&mut *lock).await?;
                last_beat = Instant::now();
            }
            if advance.published > 0 || advance.full {
                continue;
            }
            // Nothing new: wait for the next commit's wake-up. While published events are
            // not final yet, look again soon to move the line past them.
            let poll = if cursor.ahead.is_empty() {
                POLL
            } else {
                LINE_RECHECK
            };
            tokio::select! {
                _ = wakeup.wait(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tx_id: u64, global_position: i64) -> Checkpoint {
        Checkpoint {
            tx_id,
            global_position,
        }
    }

    fn cursor(line: Checkpoint, ahead: &[Checkpoint]) -> Cursor {
        Cursor {
            line,
            ahead: ahead.iter().copied().collect(),
        }
    }

    #[test]
    fn the_line_passes_final_events_and_stops_at_the_first_that_is_not() {
        let mut c = cursor(at(10, 1), &[at(11, 2), at(12, 3), at(15, 4), at(16, 5)]);
        c.settle(15, None);
        assert_eq!(c.line, at(12, 3));
        assert_eq!(c.ahead, [at(15, 4), at(16, 5)].into_iter().collect());
        c.settle(17, None);
        assert_eq!(c.line, at(16, 5));
        assert!(c.ahead.is_empty());
    }

    #[test]
    fn the_line_never_passes_what_a_cut_read_did_not_reach() {
        let mut c = cursor(at(10, 1), &[at(11, 2), at(12, 3), at(13, 9)]);
        c.settle(20, Some(at(12, 3)));
        assert_eq!(
            c.line,
            at(12, 3),
            "an unread event may lie between 12 and 13"
        );
        assert_eq!(c.ahead, [at(13, 9)].into_iter().collect());
    }

    #[test]
    fn nothing_ahead_leaves_the_line_where_it_is() {
        let mut c = cursor(at(10, 1), &[]);
        c.settle(100, None);
        assert_eq!(c.line, at(10, 1));
    }
}

//! The event feed: every event of the log, once, in commit order.
//!
//! The appender serializes commits (see [`crate::appender`]): it takes a transaction-level
//! advisory lock just before it inserts and holds it through the commit, so positions are
//! handed out in commit order. Once position N is visible, no event below N can still
//! commit. The feed therefore reads `global_position > checkpoint` in position order and
//! checkpoints on the position alone; no other transaction on the server (in Ordo or not,
//! however long it stays open) holds it back. Projections, the relay and the process manager
//! all read through here.

pub mod bulk;
mod cadence;
mod known;
mod listener;

pub use cadence::Cadence;
pub use known::KnownHead;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Where a reader is in the feed: the position of the last event it has processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub global_position: i64,
}

impl Checkpoint {
    pub fn at(global_position: i64) -> Self {
        Self { global_position }
    }
}

/// One event as the feed delivers it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub checkpoint: Checkpoint,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The event's JSON as stored, unparsed (parsing is the reader's cost to pay, once, into
    /// its own type). Empty when the reader asked for other event types only.
    pub payload: String,
    /// The metadata's JSON as stored, unparsed; empty unless asked for, and for the events
    /// whose payload the reader does not want.
    pub metadata: String,
    /// The channel of the event's stream (see [`crate::channels`]), always.
    pub channel: String,
}

/// What a reader wants of each event: the payload only of the event types it handles (the
/// others still pass by, so its checkpoint advances over them), and their metadata or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want<'a> {
    /// `None`: every payload.
    pub event_types: Option<&'a [&'a str]>,
    pub metadata: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("event {position} ({event_type}) cannot be read: {reason}")]
pub struct DecodeError {
    pub position: i64,
    pub event_type: String,
    pub reason: String,
}

impl FeedEvent {
    /// The payload as a domain event, upcast from older schema versions first.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, DecodeError> {
        let error = |reason: String| DecodeError {
            position: self.checkpoint.global_position,
            event_type: self.event_type.clone(),
            reason,
        };
        if !crate::store::needs_upcast(&self.event_type, &self.event_version) {
            // The common case: the stored version is current; parse straight into `E`.
            return serde_json::from_str(&self.payload).map_err(|e| error(e.to_string()));
        }
        let payload: Value =
            serde_json::from_str(&self.payload).map_err(|e| error(e.to_string()))?;
        let serialized = cqrs_es::persist::SerializedEvent::new(
            self.aggregate_id.clone(),
            self.sequence as usize,
            self.aggregate_type.clone(),
            self.event_type.clone(),
            self.event_version.clone(),
            payload,
            Value::Null,
        );
        let serialized = crate::store::upcast(serialized);
        serde_json::from_value(serialized.payload).map_err(|e| error(e.to_string()))
    }
}

/// Up to `limit` events after `after`, in commit order, with everything.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    let everything = Want {
        event_types: None,
        metadata: true,
    };
    read(conn, after, limit, everything).await
}

/// Up to `limit` events after `after`, in commit order, with what `want` asks for.
pub async fn read(
    conn: &mut PgConnection,
    after: Checkpoint,
    limit: i64,
    want: Want<'_>,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    let types: Option<Vec<String>> = want
        .event_types
        .map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    let rows = sqlx::query(include_str!("sql/feed_read.sql"))
        .bind(after.global_position)
        .bind(limit)
        .bind(types)
        .bind(want.metadata)
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(FeedEvent {
                checkpoint: Checkpoint {
                    global_position: row.try_get("global_position")?,
                },
                event_id: row.try_get("event_id")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                recorded_at: row.try_get("recorded_at")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
                channel: row.try_get("channel")?,
            })
        })
        .collect()
}

/// Whether any event lies beyond `after`: what a reader checks, without locking or writing
/// anything, before it takes a step. Asks the database only when this process knows of no
/// such event (see [`KnownHead`]).
pub async fn written_after(pool: &PgPool, after: Checkpoint) -> Result<bool, sqlx::Error> {
    if KnownHead::of(pool).get() > after.global_position {
        return Ok(true);
    }
    Ok(head(pool).await? > after.global_position)
}

/// The position of the last committed event (0 for an empty log). Every position up to it
/// that will ever be visible is visible now.
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let head: Option<i64> = sqlx::query_scalar(
        "SELECT global_position FROM event_store.events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(head.unwrap_or(0))
}

/// How far behind the head a reader at `after` is: the head's position minus the reader's
/// (an upper bound of the events not yet read: positions a rolled-back append took are
/// never filled), and the age of the first event not yet read.
///
/// Two index lookups, never a count: status pages, the console and the components' lag
/// gauges call it often, and a count over a large backlog would cost more the further
/// behind a reader falls.
pub async fn lag(pool: &PgPool, after: Checkpoint) -> Result<(i64, f64), sqlx::Error> {
    let head = head(pool).await?;
    if head <= after.global_position {
        return Ok((0, 0.0));
    }
    let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT recorded_at FROM event_store.events WHERE global_position > $1
          ORDER BY global_position LIMIT 1",
    )
    .bind(after.global_position)
    .fetch_optional(pool)
    .await?;
    let seconds = oldest.map_or(0.0, |t| {
        (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
    });
    Ok((head - after.global_position, seconds))
}

/// Wakes a reader when new events commit: this process's own commits through the
/// [`KnownHead`], other processes' through the `ordo_events` notifications, which the
/// process's one listener of the database turns into a higher known head
/// (`feed/listener.rs`). Notifications may be missed (a dropped connection), so waiting
/// also ends after `poll`: polling is the fallback.
pub struct Wakeup {
    known: KnownHead,
    moved: tokio::sync::watch::Receiver<i64>,
    nudged: tokio::sync::watch::Receiver<u64>,
    /// Keeps the shared listener running while this reader waits on it.
    _listening: std::sync::Arc<listener::Listening>,
}

pub const CHANNEL: &str = "ordo_events";

/// How long a reader waits after a step that found events but not a full batch, before it
/// reads again. Under load this lets batches grow instead of steps multiplying (each step is
/// several round trips and a commit, whatever its size); an idle reader is not held back: it
/// waits for the next commit's notification and reads at once. At most this much is added
/// to the time a command takes to show in a read model.
pub const LINGER: Duration = Duration::from_millis(10);

/// [`LINGER`] for the readers no client waits on to read its own writes (the relay, the
/// process manager and, through JetStream, the workers) while the flow is heavy (see
/// [`Cadence`]). Each step costs several round trips and a commit whatever its size, and at
/// a steady peak rate the readers' steps, not the commands, were most of the machine's
/// work; these readers then trade a few tens of milliseconds of delay (a webhook, an
/// e-mail, a payment status) for batches five times larger. Under a lighter flow they
/// linger [`LINGER`].
pub const LINGER_BACKGROUND: Duration = Duration::from_millis(50);

impl Wakeup {
    pub fn new(pool: &PgPool) -> Self {
        let known = KnownHead::of(pool);
        let listening = listener::Listening::of(pool);
        Self {
            moved: known.subscribe(),
            nudged: listening.subscribe(),
            known,
            _listening: listening,
        }
    }

    /// The highest committed position this process knows of (see [`KnownHead`]).
    pub fn known_head(&self) -> i64 {
        self.known.get()
    }

    /// After a step that read all there was up to `seen`: linger for `linger` (under a
    /// steady flow the next step then reads many events at once), then wait for news beyond
    /// `seen` ([`Wakeup::wait_beyond`], at once if some came meanwhile).
    pub async fn linger_then_wait(&mut self, seen: i64, linger: Duration, poll: Duration) {
        tokio::time::sleep(linger).await;
        self.wait_beyond(seen, poll).await;
    }

    /// Wait until the known head rises above `seen` (a commit of this process, or a
    /// notification of a position above it) or `poll` passes, whichever comes first; at once
    /// if the head is already above `seen`. Notifications of positions up to `seen` (commits
    /// the reader has read already) do not wake it; one without a position does, and so
    /// does the listener's reconnection. `false` when `poll` passed: nothing said anything
    /// was new, and the reader should look for itself.
    pub async fn wait_beyond(&mut self, seen: i64, poll: Duration) -> bool {
        if self.known.get() > seen {
            return true;
        }
        self.moved.borrow_and_update();
        // A nudge since the last wait is not marked seen: it may have come (a reconnection)
        // after the reader's last read, and then only a look finds what it stands for.
        let nudged = &mut self.nudged;
        tokio::select! {
            () = rises_above(&mut self.moved, seen) => true,
            changed = nudged.changed() => changed.is_ok(),
            () = tokio::time::sleep(poll) => false,
        }
    }
}

/// Until this process's commits raise the known head above `seen` (never, if they stop).
async fn rises_above(moved: &mut tokio::sync::watch::Receiver<i64>, seen: i64) {
    while moved.changed().await.is_ok() {
        if *moved.borrow_and_update() > seen {
            return;
        }
    }
    std::future::pending::<()>().await
}

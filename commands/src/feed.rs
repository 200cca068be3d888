//! The gap-free event feed: every event of the log, once, in commit order.
//!
//! `global_position` is insertion order, not commit order: a transaction that took position
//! 10 may commit after one that took 11. The feed therefore reads only rows whose writing
//! transaction is older than every transaction still running
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`): no row can ever appear below that
//! line again. It orders by `(tx_id, global_position)` and readers checkpoint on that pair.
//! Projections, the relay and the process manager all read through here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Where a reader is in the feed: the last event it has processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// The writing transaction (`xid8`), as a number.
    pub tx_id: u64,
    pub global_position: i64,
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
    /// The metadata's JSON as stored, unparsed; empty unless asked for.
    pub metadata: String,
}

/// What a reader wants of each event: the payload only of the event types it handles (the
/// others still pass by, so its checkpoint advances over them), and the metadata or not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want<'a> {
    /// `None`: every payload.
    pub event_types: Option<&'a [&'a str]>,
    pub metadata: bool,
}

#[derive(Debug, thiserror::Error)]
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

/// Up to `limit` final events after `after`, in commit order, with everything.
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

/// Up to `limit` final events after `after`, in commit order, with what `want` asks for.
pub async fn read(
    conn: &mut PgConnection,
    after: Checkpoint,
    limit: i64,
    want: Want<'_>,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    select(conn, after, &[], limit, want, true).await
}

/// The feed's horizon now: every transaction below it has ended, so every event with a
/// smaller `tx_id` is committed (and visible to any statement that starts afterwards) or
/// never will be.
pub async fn horizon(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let xmin: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(conn)
            .await?;
    Ok(xmin as u64)
}

/// Which events a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// Only final events (below the horizon): nothing can ever appear before them.
    Final,
    /// Every committed event, final or not.
    Committed,
}

/// Up to `limit` events after `after` in commit order, leaving out the positions in `skip`
/// (those the reader already has). For a reader that acts on events as soon as they commit
/// rather than once they are final (the relay): an event that is not final yet may still be
/// followed by one *below* it, from an older transaction that commits later, so such a
/// reader keeps its own record of what it took beyond `after`.
pub async fn read_beyond(
    conn: &mut PgConnection,
    after: Checkpoint,
    skip: &[i64],
    limit: i64,
    want: Want<'_>,
    finality: Finality,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    select(conn, after, skip, limit, want, finality == Finality::Final).await
}

async fn select(
    conn: &mut PgConnection,
    after: Checkpoint,
    skip: &[i64],
    limit: i64,
    want: Want<'_>,
    final_only: bool,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    let types: Option<Vec<String>> = want
        .event_types
        .map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    let rows = sqlx::query(
        "SELECT tx_id::text::bigint AS tx, global_position, event_id, aggregate_type,
                aggregate_id, sequence, event_type, event_version, recorded_at,
                CASE WHEN $4::text[] IS NULL OR event_type = ANY($4) THEN payload::text ELSE '' END AS payload,
                CASE WHEN $5 THEN metadata::text ELSE '' END AS metadata
           FROM event_store.events
          WHERE (tx_id, global_position) > ($1::text::xid8, $2)
            AND (NOT $6 OR tx_id < pg_snapshot_xmin(pg_current_snapshot()))
            AND NOT (global_position = ANY($7::bigint[]))
          ORDER BY tx_id, global_position
          LIMIT $3",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .bind(types)
    .bind(want.metadata)
    .bind(final_only)
    .bind(skip)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let tx: i64 = row.try_get("tx")?;
            Ok(FeedEvent {
                checkpoint: Checkpoint {
                    tx_id: tx as u64,
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
            })
        })
        .collect()
}

/// Whether any committed event lies beyond `after`, final or not.
///
/// Not `EXISTS (...)`: under a generic plan PostgreSQL estimates a third of the table beyond
/// any checkpoint and scans the table for the first row, which at the head of the log (the
/// usual case) reads all of it. An ordered `LIMIT 1` walks the commit-order index instead.
pub async fn written_after(pool: &PgPool, after: Checkpoint) -> Result<bool, sqlx::Error> {
    first_after(pool, after, Finality::Committed).await
}

/// Whether a final event lies beyond `after`: what a reader checks, without locking or
/// writing anything (which would take a transaction id and hold the horizon back for every
/// reader), before it takes a step.
pub async fn final_after(pool: &PgPool, after: Checkpoint) -> Result<bool, sqlx::Error> {
    first_after(pool, after, Finality::Final).await
}

async fn first_after(
    pool: &PgPool,
    after: Checkpoint,
    finality: Finality,
) -> Result<bool, sqlx::Error> {
    let first: Option<i64> = sqlx::query_scalar(
        "SELECT global_position FROM event_store.events
          WHERE (tx_id, global_position) > ($1::text::xid8, $2)
            AND (NOT $3 OR tx_id < pg_snapshot_xmin(pg_current_snapshot()))
          ORDER BY tx_id, global_position LIMIT 1",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .bind(finality == Finality::Final)
    .fetch_optional(pool)
    .await?;
    Ok(first.is_some())
}

/// How far behind the head a reader at `after` is: events not yet read, and the age of the
/// oldest of them.
pub async fn lag(pool: &PgPool, after: Checkpoint) -> Result<(i64, f64), sqlx::Error> {
    let (events, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM event_store.events
          WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .fetch_one(pool)
    .await?;
    let seconds = oldest.map_or(0.0, |t| {
        (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
    });
    Ok((events, seconds))
}

/// Wakes a reader when new events commit. Notifications may be missed (a dropped
/// connection), so waiting also ends after `poll`: polling is the fallback.
pub struct Wakeup {
    listener: Option<PgListener>,
    pool: PgPool,
}

pub const CHANNEL: &str = "ordo_events";

impl Wakeup {
    pub async fn new(pool: &PgPool) -> Self {
        let mut this = Self {
            listener: None,
            pool: pool.clone(),
        };
        this.connect().await;
        this
    }

    async fn connect(&mut self) {
        self.listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot LISTEN; polling");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot LISTEN; polling");
                None
            }
        };
    }

    /// Wait for a notification or `poll`, whichever comes first.
    pub async fn wait(&mut self, poll: Duration) {
        match &mut self.listener {
            Some(listener) => match tokio::time::timeout(poll, listener.try_recv()).await {
                Ok(Ok(Some(_))) | Err(_) => {}
                // Connection lost: reconnect next time; this wait is over.
                Ok(Ok(None)) | Ok(Err(_)) => self.listener = None,
            },
            None => {
                tokio::time::sleep(poll).await;
                self.connect().await;
            }
        }
    }
}

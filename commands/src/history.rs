//! Reading a stream as recorded: every event with its position, id, time and metadata (the
//! audit trail), and state folded up to a version or an instant.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::{Map, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::chain;
use crate::store::{upcast, Versioned};
use crate::CommandError;

/// One stored event, as support staff read it.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub sequence: i64,
    pub position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The event's fields (the serde tag stripped: it repeats `event_type`).
    pub data: Value,
    /// The flat metadata map as stored.
    pub metadata: Map<String, Value>,
    /// Whether its stored hash links it to the event before it in the log.
    pub chain: ChainLink,
}

/// An event's place in the hash chain ([`crate::chain`]), checked as `ordo audit verify`
/// checks one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainLink {
    /// Its stored hash is its link to the event before it.
    Linked,
    /// It is not: this event was changed, or the one before it removed, inserted or moved.
    Broken,
    /// It predates the chain and carries no hash.
    Unchained,
}

/// Up to `limit` events of a stream with sequence above `after`, in order.
pub async fn read_stream(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let genesis = crate::audit::genesis(pool).await?;
    let rows = sqlx::query(include_str!("sql/history_page.sql"))
        .bind(aggregate_type)
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|row| {
            let chain = link_of(&row, genesis)?;
            let mut data: Value = json(&row, "payload")?;
            if let Some(fields) = data.as_object_mut() {
                fields.remove("type");
            }
            let metadata = match json(&row, "metadata")? {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            Ok(RecordedEvent {
                sequence: row.try_get("sequence")?,
                position: row.try_get("global_position")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                schema_version: row.try_get("event_version")?,
                recorded_at: row.try_get("recorded_at")?,
                data,
                metadata,
                chain,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(CommandError::from)
}

/// A JSON column read as jsonb's text (the chain re-hashes that text).
fn json(row: &sqlx::postgres::PgRow, column: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Whether the row's stored hash is its link to the event before it in the log.
fn link_of(row: &sqlx::postgres::PgRow, genesis: i64) -> Result<ChainLink, sqlx::Error> {
    let position: i64 = row.try_get("global_position")?;
    if position <= genesis {
        return Ok(ChainLink::Unchained);
    }
    let hash = |column: &str| -> Result<Option<chain::Hash>, sqlx::Error> {
        Ok(row
            .try_get::<Option<Vec<u8>>, _>(column)?
            .and_then(|h| chain::Hash::try_from(h.as_slice()).ok()))
    };
    let previous = hash("previous_hash")?.unwrap_or(chain::ZERO);
    let linked = match (hash("hash")?, crate::audit::expected_link(row, &previous)?) {
        (Some(stored), Ok(expected)) => stored == expected,
        _ => false,
    };
    Ok(if linked {
        ChainLink::Linked
    } else {
        ChainLink::Broken
    })
}

/// Where to stop folding.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Version(u64),
    Time(DateTime<Utc>),
}

/// The state of a stream as it was at `until`, upcasting old event versions on the way.
/// Version 0 (nothing recorded yet at that point) folds to `A::default()`.
pub async fn fold_until<A: cqrs_es::Aggregate>(
    pool: &sqlx::PgPool,
    id: &str,
    until: Until,
) -> Result<Versioned<A>, CommandError> {
    let (max_sequence, max_time) = match until {
        Until::Version(v) => (i64::try_from(v).unwrap_or(i64::MAX), None),
        Until::Time(t) => (i64::MAX, Some(t)),
    };
    let rows = sqlx::query(
        "SELECT sequence, event_type, event_version, payload, metadata
           FROM event_store.events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence <= $3
            AND ($4::timestamptz IS NULL OR recorded_at <= $4)
          ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(max_sequence)
    .bind(max_time)
    .fetch_all(pool)
    .await?;
    let mut state = A::default();
    let mut version = 0;
    for row in rows {
        let sequence: i64 = row.try_get("sequence")?;
        let event = SerializedEvent::new(
            id.to_owned(),
            sequence as usize,
            A::TYPE.to_owned(),
            row.try_get("event_type")?,
            row.try_get("event_version")?,
            row.try_get("payload")?,
            row.try_get("metadata")?,
        );
        let event = upcast(event);
        let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
            CommandError::Internal(format!("event {id}/{sequence} unreadable: {e}"))
        })?;
        state.apply(payload);
        version = sequence as u64;
    }
    Ok(Versioned { state, version })
}

/// Whether the stream already holds an event caused by `causation_id` (an event id): how
/// the process manager stays idempotent when it reacts to the same event twice.
pub async fn caused_by(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    id: &str,
    causation_id: Uuid,
) -> Result<bool, CommandError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM event_store.events
                         WHERE aggregate_type = $1 AND aggregate_id = $2
                           AND metadata ->> 'causation_id' = $3)",
    )
    .bind(aggregate_type)
    .bind(id)
    .bind(causation_id.to_string())
    .fetch_one(pool)
    .await?)
}

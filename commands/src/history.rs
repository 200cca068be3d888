//! Reading a stream as recorded: every event with its position, id, time and metadata (the
//! audit trail), and state folded up to a version or an instant.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::{Map, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::chain;
use crate::privacy::{Keyring, Mode};
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

/// Up to `limit` events of a stream with sequence above `after`, in order, their personal
/// fields opened for a person to read (`"[erased]"` for an erased customer's).
pub async fn read_stream(
    keys: &Keyring,
    aggregate_type: &str,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let mut events = read_stream_as_stored(keys.pool(), aggregate_type, id, after, limit).await?;
    let mut payloads: Vec<(&str, &mut Value)> = events
        .iter_mut()
        .map(|e| (e.event_type.as_str(), &mut e.data))
        .collect();
    keys.open(&mut payloads, Mode::Display).await?;
    Ok(events)
}

/// [`read_stream`] with the payloads as stored (sealed fields sealed).
pub async fn read_stream_as_stored(
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

/// The state of a stream as it was at `until`, upcasting old event versions on the way and
/// opening personal fields the reader may read (an erased customer's are withheld).
/// Version 0 (nothing recorded yet at that point) folds to `A::default()`.
pub async fn fold_until<A: cqrs_es::Aggregate>(
    keys: &Keyring,
    id: &str,
    until: Until,
) -> Result<Versioned<A>, CommandError> {
    let pool = keys.pool();
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
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let sequence: i64 = row.try_get("sequence")?;
        events.push(SerializedEvent::new(
            id.to_owned(),
            sequence as usize,
            A::TYPE.to_owned(),
            row.try_get("event_type")?,
            row.try_get("event_version")?,
            row.try_get("payload")?,
            row.try_get("metadata")?,
        ));
    }
    let mut payloads: Vec<(&str, &mut Value)> = events
        .iter_mut()
        .map(|e| (e.event_type.as_str(), &mut e.payload))
        .collect();
    keys.open(&mut payloads, Mode::Fold).await?;
    let mut state = A::default();
    let mut version = 0;
    for event in events {
        let sequence = event.sequence as i64;
        let event = upcast(event);
        let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
            CommandError::Internal(format!("event {id}/{sequence} unreadable: {e}"))
        })?;
        state.apply(payload);
        version = sequence as u64;
    }
    Ok(Versioned { state, version })
}

/// The ids of the payments created for an order (`$1`), in the order they were created: the
/// first event of each payment stream names its order, and `events_payments_by_order`
/// indexes exactly those events, so this reads one index entry per payment, never the log.
pub const PAYMENTS_OF_ORDER: &str = "SELECT aggregate_id FROM event_store.events
      WHERE aggregate_type = 'payment' AND sequence = 1 AND payload ->> 'order_id' = $1
      ORDER BY global_position";

/// See [`PAYMENTS_OF_ORDER`].
pub async fn payment_ids_of_order(
    pool: &sqlx::PgPool,
    order_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(PAYMENTS_OF_ORDER)
        .bind(order_id.to_string())
        .fetch_all(pool)
        .await
}

/// Which kind of stream (`order`, `customer` or `payment`) has the id `$1`, if any: its first
/// event, by the log's primary key (type, id, sequence), one probe per kind. The id alone
/// is the key's second column, which walked the key from its start.
pub const STREAM_KIND: &str = "SELECT aggregate_type FROM event_store.events
      WHERE aggregate_type IN ('order', 'customer', 'payment') AND aggregate_id = $1
        AND sequence = 1
      LIMIT 1";

/// See [`STREAM_KIND`].
pub async fn stream_kind(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(STREAM_KIND)
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
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

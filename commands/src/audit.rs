//! Verifying the hash chain ([`crate::chain`]): walk the log in position order, re-compute
//! every event's link from the stored hash of the event before it, and name each event
//! whose stored hash differs.
//!
//! Each link is checked against its predecessor's *stored* hash, so a fault stays local: an
//! edited event breaks its own link only; a deleted event breaks the link of the event after
//! the gap; an inserted or reordered event breaks its own link and the next one's. A writer
//! who re-computes every hash after an edit leaves a chain that links: only a signed
//! checkpoint (which the writer cannot forge) catches that.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::chain::{self, Hash};

/// Events read per query.
const PAGE: i64 = 2_000;
/// Broken links kept in a report (all are counted).
const KEEP: usize = 100;

/// Where a walk is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The last position checked.
    pub position: i64,
    /// The walk's first position and the log's head when it started.
    pub from: i64,
    pub head: i64,
    pub checked: u64,
}

/// Why a link is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The stored hash is not the hash of this event linked to the one before it: the event
    /// was changed, or the event before it was removed, inserted or moved.
    Mismatch { expected: Hash, found: Hash },
    /// A chained position holds an event without a hash: written around the appender.
    Missing,
    /// Data or metadata is not JSON (cannot happen through jsonb; reported, not skipped).
    Unreadable(String),
}

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The position of the event it was checked against (`None`: the first event).
    pub previous: Option<i64>,
    pub fault: Fault,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "position {} ({} {}/{} #{}): ",
            self.position, self.event_type, self.aggregate_type, self.aggregate_id, self.sequence
        )?;
        let after = match self.previous {
            Some(p) => format!("the event at position {p}"),
            None => "the start of the chain".to_owned(),
        };
        match &self.fault {
            Fault::Mismatch { expected, found } => write!(
                f,
                "stored hash {} but this event linked to {after} hashes to {}: the event was \
                 changed, or an event before it was removed, inserted or moved",
                hex::encode(found),
                hex::encode(expected)
            ),
            Fault::Missing => write!(f, "no hash: written around Ordo's appender"),
            Fault::Unreadable(e) => write!(f, "unreadable JSON: {e}"),
        }
    }
}

/// The outcome of a walk.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub from: i64,
    /// The head when the walk started; events appended meanwhile are not checked.
    pub head: i64,
    /// Events at or below this position predate the chain and carry no hash.
    pub genesis: i64,
    pub checked: u64,
    /// Events in range that predate the chain.
    pub unchained: u64,
    /// The hash of the last event checked (the head's), hex.
    pub head_hash: Option<Hash>,
    /// The first broken links, in position order (at most 100)...
    pub broken: Vec<Broken>,
    /// ...and how many there are.
    pub broken_count: u64,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.broken_count == 0
    }
}

/// The position the chain starts after.
pub async fn genesis(pool: &PgPool) -> Result<i64, sqlx::Error> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT genesis FROM event_store.chain")
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

/// Walk the chain from position `from` (inclusive) to the head as it is now, calling
/// `progress` after each page. A link at `from` is checked against the stored hash of the
/// event before it.
pub async fn verify(
    pool: &PgPool,
    from: i64,
    mut progress: impl FnMut(&Progress),
) -> Result<Verification, sqlx::Error> {
    let head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM event_store.events")
            .fetch_one(pool)
            .await?;
    let mut report = Verification {
        from,
        head,
        genesis: genesis(pool).await?,
        ..Verification::default()
    };
    let before: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT global_position, hash FROM event_store.events
          WHERE global_position < $1 ORDER BY global_position DESC LIMIT 1",
    )
    .bind(from)
    .fetch_optional(pool)
    .await?;
    let mut previous: Option<i64> = before.as_ref().map(|b| b.0);
    let mut previous_hash = before.and_then(|b| b.1).and_then(to_hash);
    let mut after = from - 1;
    while after < head {
        let rows = sqlx::query(include_str!("sql/chain_page.sql"))
            .bind(after)
            .bind(head)
            .bind(PAGE)
            .fetch_all(pool)
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let position: i64 = row.try_get("global_position")?;
            let stored = row.try_get::<Option<Vec<u8>>, _>("hash")?.and_then(to_hash);
            if position > report.genesis {
                if let Some(fault) = check(&row, previous_hash.as_ref(), stored.as_ref())? {
                    report.broken_count += 1;
                    if report.broken.len() < KEEP {
                        report.broken.push(Broken {
                            position,
                            aggregate_type: row.try_get("aggregate_type")?,
                            aggregate_id: row.try_get("aggregate_id")?,
                            sequence: row.try_get("sequence")?,
                            event_type: row.try_get("event_type")?,
                            previous,
                            fault,
                        });
                    }
                }
            } else {
                report.unchained += 1;
            }
            report.checked += 1;
            previous = Some(position);
            previous_hash = stored;
            after = position;
        }
        progress(&Progress {
            position: after,
            from,
            head,
            checked: report.checked,
        });
    }
    report.head_hash = previous_hash;
    Ok(report)
}

fn to_hash(bytes: Vec<u8>) -> Option<Hash> {
    Hash::try_from(bytes.as_slice()).ok()
}

/// The fault of one chained row, if any, against its predecessor's stored hash.
fn check(
    row: &sqlx::postgres::PgRow,
    previous: Option<&Hash>,
    stored: Option<&Hash>,
) -> Result<Option<Fault>, sqlx::Error> {
    let Some(found) = stored else {
        return Ok(Some(Fault::Missing));
    };
    let expected = match expected_link(row, previous.unwrap_or(&chain::ZERO))? {
        Ok(hash) => hash,
        Err(e) => return Ok(Some(Fault::Unreadable(e))),
    };
    Ok((expected != *found).then_some(Fault::Mismatch {
        expected,
        found: *found,
    }))
}

/// Re-compute one row's link from `previous`, from the text jsonb gives back.
pub fn expected_link(
    row: &sqlx::postgres::PgRow,
    previous: &Hash,
) -> Result<Result<Hash, String>, sqlx::Error> {
    let data: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let (data, metadata) = match (chain::recanonical(&data), chain::recanonical(&metadata)) {
        (Ok(d), Ok(m)) => (d, m),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e.to_string())),
    };
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let aggregate_id: String = row.try_get("aggregate_id")?;
    let event_type: String = row.try_get("event_type")?;
    let schema_version: String = row.try_get("event_version")?;
    let event_id: Uuid = row.try_get("event_id")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    Ok(Ok(chain::link(
        previous,
        &chain::Linked {
            aggregate_type: &aggregate_type,
            aggregate_id: &aggregate_id,
            sequence: row.try_get("sequence")?,
            event_type: &event_type,
            schema_version: &schema_version,
            data: &data,
            metadata: &metadata,
            event_id,
            recorded_at,
        },
    )))
}

//! Verifying the hash chain ([`crate::chain`]): walk the log in position order, re-compute
//! every event's link from the stored hash of the event before it, and name each event
//! whose stored hash differs.
//!
//! Each link is checked against its predecessor's *stored* hash, so a fault stays local: an
//! edited event breaks its own link only; a deleted event breaks the link of the event after
//! the gap; an inserted or reordered event breaks its own link and the next one's. A writer
//! who re-computes every hash after an edit leaves a chain that links: only a signed
//! checkpoint (which the writer cannot forge) catches that. Given the trusted public keys,
//! the walk also checks every signed checkpoint in its range ([`crate::checkpoint`]): the
//! signature holds for the trusted key it names, and the stored hash at its position is the
//! signed one; the report says which key signed which checkpoints. Deleting checkpoint rows
//! before such a rewrite hides it from the database alone: a witness file kept outside it
//! ([`crate::witness`]) still names them, and [`verify_witnessed`] reports each as a fault.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::chain::{self, Hash};
use crate::checkpoint::{self, Checkpoint, Invalid, TrustedKey};

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
    /// The first holding signed checkpoint at or after it: it certified the log before the
    /// change (`None`: the signatures do not reach this far, or were not checked).
    pub signed_by: Option<Signed>,
}

/// A signed checkpoint, as a report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    /// Its row in `audit.checkpoints`; `None` for a checkpoint known only from the witness
    /// file ([`crate::witness`]): its row is missing.
    pub id: Option<i64>,
    pub position: i64,
    pub signed_at: DateTime<Utc>,
}

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signed_at = self
            .signed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.id {
            Some(id) => write!(
                f,
                "signed checkpoint #{id} (position {}, signed {signed_at})",
                self.position
            ),
            None => write!(
                f,
                "witnessed checkpoint (position {}, signed {signed_at}, not in the database)",
                self.position
            ),
        }
    }
}

impl Signed {
    fn stored(c: &Checkpoint) -> Self {
        Self {
            id: Some(c.id),
            position: c.position,
            signed_at: c.signed_at,
        }
    }

    fn witnessed(c: &Checkpoint) -> Self {
        Self {
            id: None,
            ..Self::stored(c)
        }
    }
}

/// Why a signed checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contradiction {
    /// Its signature is not a trusted key's: forged, or signed by another key (whose
    /// public key, as stored beside it, is given in base64).
    Unsigned(Invalid, String),
    /// The signature holds but the log holds another hash at its position: events at or
    /// before it were rewritten (hashes recomputed), after `since`, the last checkpoint
    /// below it that holds (`None`: from the start of the walk).
    Rewritten {
        signed: Hash,
        stored: Option<Hash>,
        since: Option<i64>,
    },
    /// The signature holds but its position no longer exists: events were deleted (past
    /// the head: the log's tail was cut).
    Gone { past_head: bool },
    /// In the witness file, its signature holds and the log still holds its hash, but its
    /// row is missing from `audit.checkpoints`: checkpoint rows were deleted.
    Unrecorded,
}

/// A signed checkpoint that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFault {
    pub checkpoint: Signed,
    pub contradiction: Contradiction,
}

impl std::fmt::Display for CheckpointFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.checkpoint)?;
        let position = self.checkpoint.position;
        match &self.contradiction {
            Contradiction::Unsigned(Invalid::OtherKey, key) => {
                write!(f, "not signed by a trusted key (it names public key {key})")
            }
            Contradiction::Unsigned(Invalid::BadSignature, _) => {
                write!(
                    f,
                    "the signature does not hold: the checkpoint was forged or altered"
                )
            }
            Contradiction::Rewritten {
                signed,
                stored,
                since,
            } => {
                let since = match since {
                    Some(p) => format!("after position {p}, the last checkpoint that holds"),
                    None => "from the start of the walk".to_owned(),
                };
                write!(
                    f,
                    "signed hash {} but position {position} now holds {}: events up to \
                     position {position}, {since}, were rewritten",
                    hex::encode(signed),
                    stored.map_or_else(|| "no hash".to_owned(), hex::encode)
                )
            }
            Contradiction::Gone { past_head: true } => write!(
                f,
                "position {position} is past the log's head: the tail of the log was cut"
            ),
            Contradiction::Gone { past_head: false } => write!(
                f,
                "position {position} no longer exists: events were deleted"
            ),
            Contradiction::Unrecorded => write!(
                f,
                "the witness file holds it but audit.checkpoints does not: checkpoint rows \
                 were deleted"
            ),
        }
    }
}

/// What the signed checkpoints in a walk's range say.
#[derive(Debug, Clone, Default)]
pub struct Signatures {
    /// Each trusted public key, in the trust list's order, and the checkpoints it signed.
    pub keys: Vec<KeyUse>,
    /// Checkpoints checked (those of the database, and those only the witness holds).
    pub checked: u64,
    /// Witness lines in the walk's range (`None`: no witness file was given).
    pub witnessed: Option<u64>,
    /// The highest position a holding checkpoint covers: events after it are protected by
    /// the chain only (`None`: no checkpoint holds).
    pub covered: Option<i64>,
    /// Checkpoints that do not hold, by position.
    pub faults: Vec<CheckpointFault>,
}

/// One trusted key and the checkpoints of a walk whose signature is its and holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// Its name in the trust list (its base64 text when unnamed).
    pub name: String,
    /// The public key, base64.
    pub public_key: String,
    /// Holding checkpoints it signed.
    pub signed: u64,
    /// The lowest and highest positions of those checkpoints.
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl std::fmt::Display for KeyUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.public_key {
            write!(f, "public key {}", self.public_key)?;
        } else {
            write!(f, "key {:?} ({})", self.name, self.public_key)?;
        }
        match (self.first, self.last) {
            (Some(first), Some(last)) => write!(
                f,
                ": {} holding checkpoint(s), positions {first}..={last}",
                self.signed
            ),
            _ => write!(f, ": no holding checkpoint"),
        }
    }
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
    /// The signed checkpoints' verdict (`None`: no trusted key was given).
    pub signatures: Option<Signatures>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.broken_count == 0 && self.signatures.as_ref().is_none_or(|s| s.faults.is_empty())
    }

    /// How far the signatures reach, in a sentence.
    pub fn coverage(&self) -> String {
        match self.signatures.as_ref().map(|s| s.covered) {
            None => "signatures not checked (no trusted public key): every event is protected \
                     by the chain only"
                .to_owned(),
            Some(None) => "no signed checkpoint holds in this range: every event is protected \
                           by the chain only"
                .to_owned(),
            Some(Some(p)) if p >= self.head => {
                format!(
                    "every event up to position {p}, the head, is covered by a signed checkpoint"
                )
            }
            Some(Some(p)) => format!(
                "events up to position {p} are covered by signed checkpoints; events after \
                 position {p}, the last signed checkpoint, are protected by the chain only"
            ),
        }
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
/// event before it. With `trusted` keys, the signed checkpoints at positions from `from` on
/// are checked against them, each against the key it names if that key is trusted (never
/// against a key read from the database alone); empty, signatures are not checked.
pub async fn verify(
    pool: &PgPool,
    from: i64,
    trusted: &[TrustedKey],
    progress: impl FnMut(&Progress),
) -> Result<Verification, sqlx::Error> {
    verify_witnessed(pool, from, trusted, None, progress).await
}

/// [`verify`], and with a `witness` ([`crate::witness::read`]) each witnessed checkpoint
/// from `from` on as well: one whose row is missing from the database is checked against
/// the chain like a stored one and is a fault in any case ([`Contradiction::Unrecorded`]
/// when the chain still agrees with it). Without `trusted` keys, the public keys the witness
/// names are trusted.
pub async fn verify_witnessed(
    pool: &PgPool,
    from: i64,
    trusted: &[TrustedKey],
    witness: Option<&[Checkpoint]>,
    mut progress: impl FnMut(&Progress),
) -> Result<Verification, sqlx::Error> {
    let witnessed_keys;
    let trusted = match witness {
        Some(lines) if trusted.is_empty() => {
            witnessed_keys = keys_of(lines);
            &witnessed_keys
        }
        _ => trusted,
    };
    // Checkpoints before the head: every checkpoint read here was signed at or below it.
    let mut signed = if trusted.is_empty() {
        None
    } else {
        let mut walk = SignedWalk::new(trusted, checkpoint::all(pool).await?, from);
        if let Some(lines) = witness {
            walk.witness(trusted, lines, from);
        }
        Some(walk)
    };
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
            if let Some(signed) = &mut signed {
                signed.at(position, stored.as_ref());
            }
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
                            signed_by: None,
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
    if let Some(signed) = signed {
        let signatures = signed.finish(head);
        for broken in &mut report.broken {
            broken.signed_by = signatures
                .holding
                .iter()
                .copied()
                .find(|c| c.position >= broken.position);
        }
        report.signatures = Some(signatures.report);
    }
    Ok(report)
}

/// The distinct public keys a witness names, unnamed, in order of first appearance (a
/// malformed key is left out: its lines then fault as another key's).
fn keys_of(lines: &[Checkpoint]) -> Vec<TrustedKey> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    for key in lines
        .iter()
        .filter_map(|c| VerifyingKey::try_from(c.public_key.as_slice()).ok())
    {
        if keys.iter().all(|k| k.key != key) {
            keys.push(TrustedKey::unnamed(key));
        }
    }
    keys
}

/// The signed checkpoints met along a walk.
struct SignedWalk {
    /// The stored checkpoints' (position, hash, signature), to tell witnessed ones apart.
    stored: std::collections::HashSet<(i64, Vec<u8>, Vec<u8>)>,
    /// Checkpoints whose signature holds, not yet reached, by position, with the index of
    /// the key that signed each.
    ahead: VecDeque<(Signed, Hash, usize)>,
    holding: Vec<Signed>,
    report: Signatures,
}

impl SignedWalk {
    fn new(trusted: &[TrustedKey], checkpoints: Vec<Checkpoint>, from: i64) -> Self {
        let mut walk = Self {
            stored: checkpoints
                .iter()
                .map(|c| (c.position, c.hash.clone(), c.signature.clone()))
                .collect(),
            ahead: VecDeque::new(),
            holding: Vec::new(),
            report: Signatures {
                keys: trusted
                    .iter()
                    .map(|t| KeyUse {
                        name: t.name.clone(),
                        public_key: checkpoint::public_key_text(&t.key),
                        ..KeyUse::default()
                    })
                    .collect(),
                ..Signatures::default()
            },
        };
        for c in checkpoints.iter().filter(|c| c.position >= from) {
            walk.check(trusted, c, Signed::stored(c));
        }
        walk
    }

    /// Take in the witness's checkpoints from `from` on whose row is missing (a line
    /// repeated, or matching a stored checkpoint, counts once).
    fn witness(&mut self, trusted: &[TrustedKey], lines: &[Checkpoint], from: i64) {
        let mut seen = std::collections::HashSet::new();
        let mut witnessed = 0;
        for c in lines.iter().filter(|c| c.position >= from) {
            let id = (c.position, c.hash.clone(), c.signature.clone());
            if !seen.insert(id.clone()) {
                continue;
            }
            witnessed += 1;
            if !self.stored.contains(&id) {
                self.check(trusted, c, Signed::witnessed(c));
            }
        }
        self.report.witnessed = Some(witnessed);
        self.ahead
            .make_contiguous()
            .sort_by_key(|(s, _, _)| (s.position, s.id));
    }

    fn check(&mut self, trusted: &[TrustedKey], c: &Checkpoint, signed: Signed) {
        self.report.checked += 1;
        match c.check_any(trusted) {
            Ok((hash, key)) => self.ahead.push_back((signed, hash, key)),
            Err(invalid) => self.fault(
                signed,
                Contradiction::Unsigned(invalid, hex_or_base64(&c.public_key)),
            ),
        }
    }

    /// The walk reached `position`, whose stored hash is `stored`.
    fn at(&mut self, position: i64, stored: Option<&Hash>) {
        while let Some((signed, hash, key)) = self.ahead.front().copied() {
            if signed.position > position {
                break;
            }
            self.ahead.pop_front();
            if signed.position < position {
                self.fault(signed, Contradiction::Gone { past_head: false });
            } else if stored == Some(&hash) {
                if signed.id.is_none() {
                    self.fault(signed, Contradiction::Unrecorded);
                }
                self.holding.push(signed);
                self.report.covered = Some(position);
                let used = &mut self.report.keys[key];
                used.signed += 1;
                used.first.get_or_insert(position);
                used.last = Some(position);
            } else {
                let since = self.report.covered;
                self.fault(
                    signed,
                    Contradiction::Rewritten {
                        signed: hash,
                        stored: stored.copied(),
                        since,
                    },
                );
            }
        }
    }

    fn fault(&mut self, checkpoint: Signed, contradiction: Contradiction) {
        self.report.faults.push(CheckpointFault {
            checkpoint,
            contradiction,
        });
    }

    /// The walk ended at `head`: checkpoints not reached name positions that are gone.
    fn finish(mut self, head: i64) -> Self {
        while let Some((signed, _, _)) = self.ahead.pop_front() {
            let past_head = signed.position > head;
            self.fault(signed, Contradiction::Gone { past_head });
        }
        self.report
            .faults
            .sort_by_key(|f| (f.checkpoint.position, f.checkpoint.id));
        self
    }
}

fn hex_or_base64(key: &[u8]) -> String {
    match VerifyingKey::try_from(key) {
        Ok(key) => checkpoint::public_key_text(&key),
        Err(_) => hex::encode(key),
    }
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

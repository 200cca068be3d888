//! Verification jobs (`POST /v1/audit/verifications`): a chain walk ([`crate::audit`]) run in
//! a task of the process that accepted it, its state, progress and result kept in
//! `audit.verifications` so that any process can answer for it.
//!
//! The running process beats `heartbeat_at` every [`HEARTBEAT`]; a job still `running`
//! whose heartbeat is older than [`STALE`] reads as `interrupted`: its process died (or
//! lost the database) and nobody will finish it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Contradiction, Fault, Progress, Verification};
use crate::checkpoint::{Invalid, TrustedKey};

/// How often a running job records its progress and proves its process alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A running job silent this long is `interrupted`.
pub const STALE: Duration = Duration::from_secs(30);

/// A verification job, as any process reads it. `result` (once `done`): `intact`, `from`,
/// `head`, `checked`, `genesis`, `unchained`, `head_hash`, `broken_count`, `broken` (the
/// first 100 broken links: `position`, the event, `previous`, `fault`
/// `mismatch`|`missing`|`unreadable`, `expected_hash`, `stored_hash`, `signed_by` — the
/// checkpoint that certified the log before — and `detail`), `signatures` (`keys`: each
/// trusted key's `name`, `public_key` and the holding checkpoints it `signed`, from
/// `first_position` to `last_position`; `checked`, `covered_through`, `faults`: each
/// `checkpoint` (`id` null for one only a witness file holds), `problem`
/// `other_key`|`bad_signature`|`rewritten`|`gone`|`unrecorded`, `detail`; `witnessed`, the
/// witness lines checked, null without a witness file; null without a trusted key)
/// and `coverage`, a sentence on how far the signatures reach.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Verification)]
pub struct Job {
    pub id: Uuid,
    /// `running`, `done`, `failed` (the walk could not finish: the error says why) or
    /// `interrupted` (its process stopped beating).
    #[schema(example = "running")]
    pub state: String,
    pub from_position: i64,
    /// The head when the walk started.
    pub head: Option<i64>,
    /// Events checked so far...
    pub checked: i64,
    /// ...of this many: the events the walk will check (from `from_position` to `head`).
    pub total: Option<i64>,
    /// The verdict once `done`.
    pub result: Option<Value>,
    /// Why a `failed` walk could not finish.
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Record a new running job.
pub async fn create(pool: &PgPool, from: i64, requested_by: &str) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO audit.verifications (id, state, from_position, requested_by)
         VALUES ($1, 'running', $2, $3)",
    )
    .bind(id)
    .bind(from)
    .bind(requested_by)
    .execute(pool)
    .await?;
    Ok(id)
}

/// One job, `None` when no job has this id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id,
                CASE WHEN state = 'running' AND heartbeat_at < now() - make_interval(secs => $2)
                     THEN 'interrupted' ELSE state END AS state,
                from_position, head, checked, total, result, error, requested_by, created_at,
                heartbeat_at, finished_at
           FROM audit.verifications WHERE id = $1",
    )
    .bind(id)
    .bind(STALE.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Walk the chain for job `id` and record the outcome; beats the heartbeat meanwhile.
pub async fn run(pool: PgPool, id: Uuid, from: i64, trusted: Vec<TrustedKey>) {
    let latest: Arc<Mutex<Option<Progress>>> = Arc::default();
    let seen = latest.clone();
    let walk = audit::verify(&pool, from, &trusted, move |p| {
        if let Ok(mut latest) = seen.lock() {
            *latest = Some(*p);
        }
    });
    let beat = async {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        loop {
            ticks.tick().await;
            let progress = latest.lock().ok().and_then(|p| *p);
            if let Err(e) = heartbeat(&pool, id, progress).await {
                tracing::warn!(verification.id = %id, error = %e, "could not record verification progress");
            }
        }
    };
    let outcome = tokio::select! {
        outcome = walk => outcome,
        () = beat => return,
    };
    let finished = match outcome {
        Ok(report) => {
            sqlx::query(
                "UPDATE audit.verifications
                SET state = 'done', head = $2, checked = $3, total = $4, result = $5,
                    heartbeat_at = now(), finished_at = now()
              WHERE id = $1",
            )
            .bind(id)
            .bind(report.head)
            .bind(report.checked as i64)
            .bind((report.head - report.from + 1).max(0))
            .bind(self::report(&report))
            .execute(&pool)
            .await
        }
        Err(e) => {
            tracing::warn!(verification.id = %id, error = %e, "verification failed");
            sqlx::query(
                "UPDATE audit.verifications
                    SET state = 'failed', error = $2, heartbeat_at = now(), finished_at = now()
                  WHERE id = $1",
            )
            .bind(id)
            .bind(format!("the walk could not finish: {e}"))
            .execute(&pool)
            .await
        }
    };
    if let Err(e) = finished {
        tracing::warn!(verification.id = %id, error = %e, "could not record a verification's outcome");
    }
}

async fn heartbeat(pool: &PgPool, id: Uuid, progress: Option<Progress>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit.verifications
            SET heartbeat_at = now(), head = coalesce($2, head), checked = coalesce($3, checked),
                total = coalesce($4, total)
          WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .bind(progress.map(|p| p.head))
    .bind(progress.map(|p| p.checked as i64))
    .bind(progress.map(|p| (p.head - p.from + 1).max(0)))
    .execute(pool)
    .await?;
    Ok(())
}

/// A verification's verdict as JSON: the API's result and `ordo audit verify`'s facts.
pub fn report(report: &Verification) -> Value {
    let broken: Vec<Value> = report
        .broken
        .iter()
        .map(|b| {
            let (fault, expected, found) = match &b.fault {
                Fault::Mismatch { expected, found } => (
                    "mismatch",
                    Some(hex::encode(expected)),
                    Some(hex::encode(found)),
                ),
                Fault::Missing => ("missing", None, None),
                Fault::Unreadable(_) => ("unreadable", None, None),
            };
            json!({
                "position": b.position,
                "aggregate_type": b.aggregate_type,
                "aggregate_id": b.aggregate_id,
                "sequence": b.sequence,
                "event_type": b.event_type,
                "previous": b.previous,
                "fault": fault,
                "expected_hash": expected,
                "stored_hash": found,
                "signed_by": b.signed_by.map(signed),
                "detail": b.to_string(),
            })
        })
        .collect();
    let signatures = report.signatures.as_ref().map(|s| {
        let faults: Vec<Value> = s
            .faults
            .iter()
            .map(|f| {
                let problem = match &f.contradiction {
                    Contradiction::Unsigned(Invalid::OtherKey, _) => "other_key",
                    Contradiction::Unsigned(Invalid::BadSignature, _) => "bad_signature",
                    Contradiction::Rewritten { .. } => "rewritten",
                    Contradiction::Gone { .. } => "gone",
                    Contradiction::Unrecorded => "unrecorded",
                };
                json!({
                    "checkpoint": signed(f.checkpoint),
                    "problem": problem,
                    "detail": f.to_string(),
                })
            })
            .collect();
        json!({
            "keys": s.keys.iter().map(|k| json!({
                "name": k.name,
                "public_key": k.public_key,
                "signed": k.signed,
                "first_position": k.first,
                "last_position": k.last,
            })).collect::<Vec<Value>>(),
            "checked": s.checked,
            "witnessed": s.witnessed,
            "covered_through": s.covered,
            "faults": faults,
        })
    });
    json!({
        "intact": report.intact(),
        "from": report.from,
        "head": report.head,
        "checked": report.checked,
        "genesis": report.genesis,
        "unchained": report.unchained,
        "head_hash": report.head_hash.map(hex::encode),
        "broken_count": report.broken_count,
        "broken": broken,
        "signatures": signatures,
        "coverage": report.coverage(),
    })
}

fn signed(c: audit::Signed) -> Value {
    json!({"id": c.id, "position": c.position, "signed_at": c.signed_at})
}

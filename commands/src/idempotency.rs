//! `Idempotency-Key`: a retry with the same key and request gets the first answer back and
//! writes no new events, exactly once even if the process died between commit and answer.
//!
//! How: a row per (API key, idempotency key) holds the request's hash and, once known, the
//! response. While a request runs, it holds that row's lock in an open transaction, so a
//! concurrent duplicate sees `NOWAIT` fail (in flight, 409). If the process dies, PostgreSQL
//! drops the lock with the connection; the next retry takes the lock, sees no stored response,
//! and asks the event store whether events carrying this key were committed. If so, it rebuilds
//! the response from them instead of running the command again.
//!
//! Call [`claim`] with a pool of its own: a request holds its lock connection while its
//! command waits for another, so sharing one pool lets enough concurrent keyed requests take
//! every connection and wait for ever on each other.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::{CommandError, Committed};

/// How long a key is remembered. DESIGN.md §4 asks for at least 24 hours.
pub const RETENTION_HOURS: i32 = 24;

pub enum Claim {
    /// First time for this key: run the command, then `complete` or `release` the guard.
    Execute(Guard),
    /// The command committed before its answer was stored (a crash in between): answer
    /// from these events and `complete` the guard.
    Recovered(Guard, Committed),
    /// A stored answer to send back as it is.
    Replay { status: u16, body: Value },
    /// The key was used with a different request.
    Mismatch,
    /// The same request is being processed right now.
    InFlight,
}

/// Holds the idempotency row's lock until the outcome is recorded. Dropping it without
/// recording rolls back, which leaves the row free for a retry.
pub struct Guard {
    tx: Transaction<'static, Postgres>,
    scope: String,
    key: String,
}

pub async fn claim(
    pool: &PgPool,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, CommandError> {
    sqlx::query(
        "INSERT INTO event_store.idempotency_keys (scope, key, request_hash)
         VALUES ($1, $2, $3) ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .execute(pool)
    .await?;

    let mut tx = pool.begin().await?;
    let locked = sqlx::query(
        "SELECT request_hash, response_status, response_body
           FROM event_store.idempotency_keys
          WHERE scope = $1 AND key = $2
          FOR UPDATE NOWAIT",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await;
    let row = match locked {
        Ok(Some(row)) => row,
        // Purged between our insert and our lock: treat as in flight; a retry starts over.
        Ok(None) => return Ok(Claim::InFlight),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            drop(tx);
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT request_hash FROM event_store.idempotency_keys
                  WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            return Ok(match stored {
                Some(hash) if hash != request_hash => Claim::Mismatch,
                _ => Claim::InFlight,
            });
        }
        Err(e) => return Err(e.into()),
    };

    let stored_hash: String = row.try_get("request_hash")?;
    if stored_hash != request_hash {
        return Ok(Claim::Mismatch);
    }
    let status: Option<i16> = row.try_get("response_status")?;
    if let Some(status) = status {
        let body: Option<Value> = row.try_get("response_body")?;
        return Ok(Claim::Replay {
            status: status as u16,
            body: body.unwrap_or(Value::Null),
        });
    }

    let guard = Guard {
        tx,
        scope: scope.to_owned(),
        key: key.to_owned(),
    };
    let mut guard = guard;
    match committed_with_key(&mut guard.tx, scope, key).await? {
        Some(committed) => Ok(Claim::Recovered(guard, committed)),
        None => Ok(Claim::Execute(guard)),
    }
}

/// What events committed under this key say the command's result was. Runs on the
/// guard's own connection: a second one could wait on a pool this request is starving. Only
/// events within the retention period count, so a key reused after it expired is new.
async fn committed_with_key(
    conn: &mut sqlx::PgConnection,
    scope: &str,
    key: &str,
) -> Result<Option<Committed>, CommandError> {
    let row = sqlx::query(
        "SELECT aggregate_id, max(sequence) AS version, max(global_position) AS position
           FROM event_store.events
          WHERE metadata ? 'idempotency_key'
            AND metadata ->> 'idempotency_scope' = $1
            AND metadata ->> 'idempotency_key' = $2
            AND recorded_at > now() - make_interval(hours => $3)
          GROUP BY aggregate_id
          ORDER BY max(global_position) DESC
          LIMIT 1",
    )
    .bind(scope)
    .bind(key)
    .bind(RETENTION_HOURS)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version")?;
    Ok(Some(Committed {
        id: row.try_get("aggregate_id")?,
        version: version as u64,
        position: row.try_get("position")?,
    }))
}

impl Guard {
    /// Store the final answer; later retries replay it.
    pub async fn complete(mut self, status: u16, body: &Value) -> Result<(), CommandError> {
        sqlx::query(
            "UPDATE event_store.idempotency_keys
                SET response_status = $3, response_body = $4, completed_at = now()
              WHERE scope = $1 AND key = $2",
        )
        .bind(&self.scope)
        .bind(&self.key)
        .bind(status as i16)
        .bind(body)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Forget the key: the outcome was transient (conflict, store unavailable), so a retry
    /// should run the command again.
    pub async fn release(mut self) -> Result<(), CommandError> {
        sqlx::query("DELETE FROM event_store.idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(&self.scope)
            .bind(&self.key)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Delete keys older than the retention period; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, CommandError> {
    let done = sqlx::query(
        "DELETE FROM event_store.idempotency_keys
          WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

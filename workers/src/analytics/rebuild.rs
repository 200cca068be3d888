//! Analytics recomputed from the whole log on the bulk path (ADR 0021).
//!
//! The log is read once in large batches ([`feed::bulk`], the reader the read models'
//! rebuilds use); each batch is folded with the worker's own [`Effects`] and written
//! set-based into shadow tables (`analytics_rebuild`, primary keys only; the other indexes
//! are built once after the load). The recompute then reads on to the head and, with the
//! `analytics.rebuild` row locked, folds the last events and swaps the shadow tables in.
//!
//! How the live consumer and the recomputed tables meet: the swap records the position the
//! recompute folded up to (`counted_through`). Every live batch reads it under a shared
//! lock on the same row and counts only events after it; events at or before it are in the
//! recomputed tables. A live batch commits either before the swap (its events were in the
//! log before the swap read the head, so the recompute counted them too, and the tables it
//! wrote are dropped) or after it (it sees the new position). Events after the position
//! are counted once by the consumer, as always (its processed table).
//!
//! A recompute that stops (killed, failed, shut down) leaves the live tables serving and
//! untouched; the next one resumes from the position committed with its shadow rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_commands::db::{self, SWAP_LOCK_TIMEOUT};
use ordo_commands::feed::{self, bulk, Checkpoint, FeedEvent, Want};
use ordo_commands::leader;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, watch};

use super::Effects;
use crate::jetstream::Delivered;

pub(super) const LIVE: &str = "analytics";
const SHADOW: &str = "analytics_rebuild";
const TABLES: [&str; 3] = ["sales", "order_stages", "funnel"];

/// The advisory lock of the one process recomputing analytics.
const LOCK_KEY: i64 = 0x4f52_444f_414e;

/// How far a recompute has come, after each batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Events read from the log (every type: the others pass by).
    pub done: i64,
    /// Events in the log when the recompute started (it reads on past them to the head).
    pub total: i64,
    /// Since this run began.
    pub events_per_second: f64,
}

/// A recompute swapped in.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// The live tables hold every event up to this position; the consumer counts the rest.
    pub counted_through: i64,
    /// Events read by this run.
    pub events: i64,
    /// Events the worker cannot handle either (unreadable bodies, dead letters live): not
    /// counted, over the whole recompute.
    pub skipped: i64,
    /// Where this run began (0, or where an interrupted recompute had come to).
    pub resumed_from: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("another process is recomputing analytics")]
    Busy,
    #[error("stopped at position {0} before the swap: the live tables serve as they were, and the next recompute resumes there")]
    Stopped(i64),
    #[error("a sum overflows: {0}")]
    Fold(String),
    #[error("the log reader ended: {0}")]
    Reader(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Recompute the analytics tables from the whole log and swap them in; `progress` is called
/// after each batch. Fails with [`RebuildError::Busy`] while another process recomputes.
pub async fn rebuild(
    pool: &PgPool,
    batch_size: i64,
    shutdown: &watch::Receiver<bool>,
    mut progress: impl FnMut(Progress),
) -> Result<Rebuilt, RebuildError> {
    let lock = leader::try_lock(pool, LOCK_KEY)
        .await?
        .ok_or(RebuildError::Busy)?;
    let result = run(pool, batch_size.max(1), shutdown, &mut progress).await;
    lock.release().await;
    result
}

/// The events live batches must leave out: those the last recompute counted. Takes the
/// `analytics.rebuild` row's shared lock for `tx`, which a swap waits for (and waits on).
pub(super) async fn counted_through(tx: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT counted_through FROM analytics.rebuild FOR KEY SHARE")
        .fetch_one(&mut *tx)
        .await
}

/// A batch read from the log: how far it goes, how many events it passed, and the ones the
/// worker reads, as the relay would have published them.
struct Batch {
    through: i64,
    read: i64,
    events: Vec<Delivered>,
}

impl Batch {
    fn decode(events: Vec<FeedEvent>) -> Self {
        Self {
            through: events.last().map_or(0, |e| e.checkpoint.global_position),
            read: events.len() as i64,
            events: events
                .into_iter()
                .filter(|e| !e.payload.is_empty())
                .map(Delivered::from_feed)
                .collect(),
        }
    }
}

const WANT: Want<'static> = Want {
    event_types: Some(Effects::EVENT_TYPES),
    metadata: false,
};

async fn run(
    pool: &PgPool,
    batch_size: i64,
    shutdown: &watch::Receiver<bool>,
    progress: &mut impl FnMut(Progress),
) -> Result<Rebuilt, RebuildError> {
    let from = resume_or_start(pool).await?;
    let (mut done, total): (i64, i64) = sqlx::query_as("SELECT done, total FROM analytics.rebuild")
        .fetch_one(pool)
        .await?;
    let (started, done_before) = (Instant::now(), done);
    let mut report = |done: i64| {
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        progress(Progress {
            done,
            total: total.max(done),
            events_per_second: (done - done_before) as f64 / seconds,
        })
    };

    // Phase 1: the bulk load, up to the head as it is now; the reader decodes in a task of
    // its own while this one folds and writes.
    let span = bulk::Span {
        from: Checkpoint::at(from),
        target: feed::head(pool).await?,
        limit: batch_size,
        want: WANT,
    };
    let (sender, mut batches) = mpsc::channel::<Arc<Batch>>(2);
    let reader = {
        let (pool, shutdown) = (pool.clone(), shutdown.clone());
        tokio::spawn(async move {
            bulk::fan_out(&pool, span, Batch::decode, vec![sender], &shutdown).await
        })
    };
    let mut position = from;
    let mut read = 0;
    while let Some(batch) = batches.recv().await {
        let mut tx = ordo_commands::db::begin(pool).await?;
        apply(tx.as_mut(), &batch).await?;
        tx.commit().await?;
        position = batch.through;
        read += batch.read;
        done += batch.read;
        report(done);
    }
    match reader.await {
        Ok(result) => result?,
        Err(e) => return Err(RebuildError::Reader(e.to_string())),
    }
    if *shutdown.borrow() {
        return Err(RebuildError::Stopped(position));
    }

    // Phase 2: the deferred indexes, once over the loaded tables.
    for table in TABLES {
        for index in secondary_indexes(pool, table).await? {
            sqlx::query(&index).execute(pool).await?;
        }
    }

    // Phase 3: read on to the head, then the last events and the swap with the row
    // locked, so that no live batch commits in between.
    loop {
        let mut tx = ordo_commands::db::begin(pool).await?;
        let batch = read_on(tx.as_mut(), position, batch_size).await?;
        apply(tx.as_mut(), &batch).await?;
        tx.commit().await?;
        if batch.read == 0 {
            break;
        }
        position = batch.through;
        read += batch.read;
        done += batch.read;
        report(done);
        if batch.read < batch_size {
            break;
        }
    }
    let skipped = loop {
        if let Some(last) = last_events_and_swap(pool, position, batch_size).await? {
            position = last.through;
            read += last.read;
            done += last.read;
            break last.skipped;
        }
        tracing::info!("analytics swap deferred: a reader holds the live tables; trying again");
        tokio::time::sleep(SWAP_RETRY).await;
        if *shutdown.borrow() {
            return Err(RebuildError::Stopped(position));
        }
    };
    report(done);
    tracing::info!(
        counted_through = position,
        read,
        skipped,
        "analytics recomputed and swapped in"
    );
    Ok(Rebuilt {
        counted_through: position,
        events: read,
        skipped,
        resumed_from: from,
    })
}

/// Where to begin: where an interrupted recompute had come to if its shadow tables are
/// there, else at zero with fresh shadow tables (primary keys only).
async fn resume_or_start(pool: &PgPool) -> Result<i64, sqlx::Error> {
    // Every shadow table must be there: a recompute begun by a version with fewer tables
    // starts over.
    let (position, shadows): (Option<i64>, bool) = sqlx::query_as(
        "SELECT position,
                (SELECT bool_and(to_regclass($1 || '.' || t) IS NOT NULL) FROM unnest($2::text[]) t)
           FROM analytics.rebuild",
    )
    .bind(SHADOW)
    .bind(&TABLES[..])
    .fetch_one(pool)
    .await?;
    if let (Some(position), true) = (position, shadows) {
        tracing::info!(position, "resuming the analytics recompute");
        return Ok(position);
    }
    for table in TABLES {
        sqlx::query(&format!("DROP TABLE IF EXISTS {SHADOW}.{table}"))
            .execute(pool)
            .await?;
        // The live table is the one definition: columns, defaults and checks alike.
        sqlx::query(&format!(
            "CREATE TABLE {SHADOW}.{table} (LIKE {LIVE}.{table} INCLUDING ALL EXCLUDING INDEXES)"
        ))
        .execute(pool)
        .await?;
        let key: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = to_regclass($1) AND contype = 'p'",
        )
        .bind(format!("{LIVE}.{table}"))
        .fetch_one(pool)
        .await?;
        sqlx::query(&format!("ALTER TABLE {SHADOW}.{table} ADD {key}"))
            .execute(pool)
            .await?;
    }
    sqlx::query(
        "UPDATE analytics.rebuild
            SET position = 0, done = 0, skipped = 0, started_at = now(),
                total = (SELECT count(*) FROM event_store.events)",
    )
    .execute(pool)
    .await?;
    tracing::info!("analytics recompute started");
    Ok(0)
}

/// The live table's indexes other than its primary key, as statements that build them on
/// the shadow table (and do nothing if they are there: a resumed recompute).
async fn secondary_indexes(pool: &PgPool, table: &str) -> Result<Vec<String>, sqlx::Error> {
    let live: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index
          WHERE indrelid = to_regclass($1) AND NOT indisprimary",
    )
    .bind(format!("{LIVE}.{table}"))
    .fetch_all(pool)
    .await?;
    Ok(live
        .into_iter()
        .map(|def| {
            def.replacen(
                &format!(" ON {LIVE}.{table} "),
                &format!(" ON {SHADOW}.{table} "),
                1,
            )
            .replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            .replacen(
                "CREATE UNIQUE INDEX ",
                "CREATE UNIQUE INDEX IF NOT EXISTS ",
                1,
            )
        })
        .collect())
}

/// Up to `limit` events after `position`, decoded.
async fn read_on(conn: &mut PgConnection, position: i64, limit: i64) -> Result<Batch, sqlx::Error> {
    let events = feed::read(conn, Checkpoint::at(position), limit, WANT).await?;
    Ok(Batch::decode(events))
}

/// Fold a batch with the worker's own [`Effects`] into the shadow tables and move the
/// recompute's position past it, in `tx`. An event the worker cannot handle is skipped, as
/// the live worker dead-letters it.
async fn apply(tx: &mut PgConnection, batch: &Batch) -> Result<(), RebuildError> {
    if batch.read == 0 {
        return Ok(());
    }
    let mut effects = Effects::default();
    let mut skipped = 0_i64;
    for event in &batch.events {
        match Effects::of(event) {
            Ok(one) => effects
                .absorb(&one)
                .map_err(|e| RebuildError::Fold(e.to_string()))?,
            Err(e) => {
                skipped += 1;
                tracing::warn!(event.id = %event.event_id, event.position = event.position, error = %e, "event not counted: the worker cannot handle it");
            }
        }
    }
    effects.write(tx, SHADOW).await?;
    sqlx::query(
        "UPDATE analytics.rebuild
            SET position = $1, done = done + $2, skipped = skipped + $3,
                total = greatest(total, done + $2)",
    )
    .bind(batch.through)
    .bind(batch.read)
    .bind(skipped)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How long a swap that a reader of the live tables held off waits before it is tried again.
const SWAP_RETRY: Duration = Duration::from_secs(1);

/// What the last transaction of a recompute applied and swapped in.
struct Swapped {
    through: i64,
    read: i64,
    skipped: i64,
}

/// The last events after `position` and the swap, with the row locked so that no live batch
/// commits in between; `None` if a reader held a live table longer than
/// [`SWAP_LOCK_TIMEOUT`] (then nothing of it was committed).
async fn last_events_and_swap(
    pool: &PgPool,
    mut position: i64,
    batch_size: i64,
) -> Result<Option<Swapped>, RebuildError> {
    let mut tx = db::begin(pool).await?;
    sqlx::query("SELECT FROM analytics.rebuild FOR UPDATE")
        .execute(tx.as_mut())
        .await?;
    let mut read = 0;
    loop {
        let batch = read_on(tx.as_mut(), position, batch_size).await?;
        if batch.read == 0 {
            break;
        }
        apply(tx.as_mut(), &batch).await?;
        position = batch.through;
        read += batch.read;
    }
    match swap(tx.as_mut(), position).await {
        Ok(skipped) => {
            tx.commit().await?;
            Ok(Some(Swapped {
                through: position,
                read,
                skipped,
            }))
        }
        Err(e) if db::is_lock_timeout(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replace the live tables with the shadow ones and record what they counted; returns
/// how many events the recompute skipped. In the transaction that holds the row's lock;
/// fails with a lock timeout if a reader holds a live table longer than
/// [`SWAP_LOCK_TIMEOUT`].
async fn swap(tx: &mut PgConnection, position: i64) -> Result<i64, sqlx::Error> {
    db::lock_timeout(tx, SWAP_LOCK_TIMEOUT).await?;
    for table in TABLES {
        sqlx::query(&format!("DROP TABLE {LIVE}.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {SHADOW}.{table} SET SCHEMA {LIVE}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query_scalar(
        "UPDATE analytics.rebuild
            SET counted_through = $1, rebuilt_at = now(), position = NULL
         RETURNING skipped",
    )
    .bind(position)
    .fetch_one(&mut *tx)
    .await
}

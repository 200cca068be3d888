//! Rebuilds into the shadow schema, in bulk, several read models from one read of the log
//! (ADR 0014).
//!
//! A rebuild goes through three phases, each restartable from the rebuild checkpoint that
//! commits with the shadow rows:
//! 1. **bulk load**: one reader reads the log in large batches and decodes each event once;
//!    every rebuilding read model folds each batch in memory and writes it set-based
//!    (`unnest` upserts) into shadow tables that have their primary keys only;
//! 2. **indexes**: the secondary indexes are built once over the loaded tables;
//! 3. **catch-up and swap**: the read model follows the log to its head, then, with its
//!    checkpoint row locked (the live runner waits), applies the last events and swaps the
//!    shadow tables in for the live ones in one transaction.
//!
//! One process rebuilds a read model at a time (an advisory lock per read model, apart from
//! the live runner's, so a process that does not lead the live tables may build). A process
//! builds only its own [`Version`], and never one older than the version serving: during a
//! rolling deploy the newer processes build and swap, the older ones keep serving until the
//! swap and then stand down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::model::{decode_all, Decoded, Projection, Version, LIVE, SHADOW};
use crate::runner::{last_checkpoint, prepare_version, record_error, RunnerConfig};
use ordo_commands::db::{self, SWAP_LOCK_TIMEOUT};
use ordo_commands::feed::{self, Checkpoint};
use ordo_commands::leader::{self, Lock};
use ordo_commands::privacy::Keyring;

/// Runs every rebuild this process may run, until shut down.
pub struct Rebuilder {
    pool: PgPool,
    /// Opens the events' personal fields (ADR 0020); an erased customer's are withheld, so a
    /// rebuild never brings them back.
    keys: Keyring,
    config: RunnerConfig,
    versions: HashMap<Projection, Version>,
}

/// One read model being rebuilt here: its lock and where its shadow tables are.
struct Job {
    projection: Projection,
    version: Version,
    position: i64,
    lock: Lock,
    /// Seal the personal values the shadow tables keep, as the live runner does.
    keys: Keyring,
}

type Batch = Arc<Vec<Decoded>>;

impl Rebuilder {
    pub fn new(pool: PgPool, config: RunnerConfig) -> Self {
        Self {
            keys: Keyring::new(pool.clone(), None),
            pool,
            config,
            versions: Projection::ALL
                .into_iter()
                .map(|p| (p, p.version()))
                .collect(),
        }
    }

    /// Build `projection` as if this code were `version` of it (tests of rolling deploys).
    /// Open sealed personal fields with these keys (see [`crate::Runner::with_keys`]).
    pub fn with_keys(mut self, keys: Keyring) -> Self {
        self.keys = keys;
        self
    }

    pub fn with_version(mut self, projection: Projection, version: Version) -> Self {
        self.versions.insert(projection, version);
        self
    }

    fn version(&self, projection: Projection) -> Version {
        self.versions
            .get(&projection)
            .copied()
            .unwrap_or_else(|| projection.version())
    }

    /// Rebuild whatever is requested or outdated, until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            let pause = match self.rebuild_once(&shutdown).await {
                Ok(0) => self.config.heartbeat,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "rebuild round failed; retrying");
                    self.config.heartbeat
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One round: request a rebuild of each read model whose live tables an older version
    /// built, take every rebuild of this version no other process holds, and run them to
    /// their swap together. Returns how many read models were swapped in.
    pub async fn rebuild_once(
        &self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<usize, sqlx::Error> {
        let mut jobs = Vec::new();
        for projection in Projection::ALL {
            let version = self.version(projection);
            // Takes no lock when the live tables are there (see `prepare_version`).
            prepare_version(&self.pool, projection, version).await?;
            request_if_outdated(&self.pool, projection, version).await?;
            if let Some(job) = self.take(projection, version).await? {
                jobs.push(job);
            }
        }
        if jobs.is_empty() {
            return Ok(0);
        }
        let jobs = self.bulk_load(jobs, shutdown).await?;
        let mut swapped = 0;
        for job in jobs {
            if *shutdown.borrow() {
                job.lock.release().await;
                continue;
            }
            let result = self.finish(&job).await;
            job.lock.release().await;
            match result {
                Ok(true) => swapped += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(projection = job.projection.name(), error = %e, "rebuild catch-up failed")
                }
            }
        }
        Ok(swapped)
    }

    /// Take the rebuild of `projection` if one of this version waits and no other process
    /// holds it; start it if it was only requested.
    async fn take(
        &self,
        projection: Projection,
        version: Version,
    ) -> Result<Option<Job>, sqlx::Error> {
        if !pending(&self.pool, projection, version).await? {
            return Ok(None);
        }
        let Some(lock) = leader::try_lock(&self.pool, projection.rebuild_lock_key()).await? else {
            return Ok(None);
        };
        // Again under the lock: the holder before us may have finished it.
        let state: Option<(Option<String>, i64)> = sqlx::query_as(
            "SELECT rebuild_state, rebuild_position FROM projections.checkpoints
              WHERE name = $1 AND rebuild_state IS NOT NULL AND version <= $2
                AND coalesce(rebuild_version, $2) = $2",
        )
        .bind(projection.name())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let position = match state {
            Some((Some(state), _)) if state == "requested" => {
                start(&self.pool, projection, version).await?;
                0
            }
            Some((_, position)) => {
                tracing::info!(projection = projection.name(), position, "resuming rebuild");
                position
            }
            None => {
                lock.release().await;
                return Ok(None);
            }
        };
        Ok(Some(Job {
            projection,
            version,
            position,
            lock,
            keys: self.keys.clone(),
        }))
    }

    /// Phase 1: one reader feeds every job the same decoded batches until the head as it was
    /// when loading began; each job applies them to its shadow tables. Returns the jobs
    /// that loaded without error (the others recorded theirs and let their lock go).
    async fn bulk_load(
        &self,
        jobs: Vec<Job>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let target = feed::head(&self.pool).await?;
        let from = jobs.iter().map(|j| j.position).min().unwrap_or(0);
        let types = Projection::event_types_of(jobs.iter().map(|j| j.projection));

        let mut senders = Vec::new();
        let mut appliers = Vec::new();
        for job in jobs {
            let (tx, rx) = mpsc::channel::<Batch>(2);
            senders.push(tx);
            let pool = self.pool.clone();
            appliers.push(tokio::spawn(async move {
                let ok = load(&pool, &job, rx).await;
                (job, ok)
            }));
        }
        let span = feed::bulk::Span {
            from: Checkpoint::at(from),
            target,
            limit: self.config.rebuild_batch_size,
            want: feed::Want {
                event_types: Some(&types),
                metadata: false,
            },
        };
        let reader = feed::bulk::fan_out_opened(
            &self.pool,
            Some(&self.keys),
            span,
            decode_all,
            senders,
            shutdown,
        )
        .await;
        let mut loaded = Vec::new();
        for applier in appliers {
            match applier.await {
                Ok((job, Ok(true))) => loaded.push(job),
                Ok((job, Ok(false))) => job.lock.release().await,
                Ok((job, Err(e))) => {
                    tracing::warn!(projection = job.projection.name(), error = %e, "bulk load failed");
                    job.lock.release().await;
                }
                Err(e) => tracing::error!(error = %e, "bulk load task ended"),
            }
        }
        reader?;
        Ok(loaded)
    }

    /// Phases 2 and 3: indexes, catch-up, swap. `Ok(false)` if the rebuild is no longer
    /// this job's (superseded, or failed on an event), or if a reader held the live tables
    /// longer than [`SWAP_LOCK_TIMEOUT`]: the next round resumes and tries again.
    async fn finish(&self, job: &Job) -> Result<bool, sqlx::Error> {
        sqlx::raw_sql(&job.projection.index_ddl(SHADOW))
            .execute(&self.pool)
            .await?;
        let limit = self.config.batch_size.max(1);
        loop {
            let mut tx = ordo_commands::db::begin(&self.pool).await?;
            let Some(position) = own_position(tx.as_mut(), job, false).await? else {
                return Ok(false);
            };
            let events = read(&self.keys, tx.as_mut(), job.projection, position, limit).await?;
            if events.len() as i64 >= limit {
                // Far from the head: apply without holding up the live runner.
                if !apply_or_record(&self.pool, tx.as_mut(), job, &events).await? {
                    return Ok(false);
                }
                tx.commit().await?;
                continue;
            }
            drop(tx);
            // Near the head: the rest and the swap with the checkpoint row locked, so that
            // no live step runs in between.
            let mut tx = ordo_commands::db::begin(&self.pool).await?;
            let Some(position) = own_position(tx.as_mut(), job, true).await? else {
                return Ok(false);
            };
            let events = read(&self.keys, tx.as_mut(), job.projection, position, limit).await?;
            if !events.is_empty() && !apply_or_record(&self.pool, tx.as_mut(), job, &events).await?
            {
                return Ok(false);
            }
            if events.len() as i64 >= limit {
                tx.commit().await?;
                continue;
            }
            match swap(tx.as_mut(), job.projection).await {
                Ok(()) => {}
                Err(e) if db::is_lock_timeout(&e) => {
                    tracing::info!(
                        projection = job.projection.name(),
                        "swap deferred: a reader holds the live tables; the next round tries again"
                    );
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
            tx.commit().await?;
            tracing::info!(
                projection = job.projection.name(),
                version = job.version,
                "rebuild swapped in"
            );
            return Ok(true);
        }
    }
}

/// Whether a rebuild of `projection` waits for a process of `version`.
async fn pending(
    pool: &PgPool,
    projection: Projection,
    version: Version,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM projections.checkpoints
                         WHERE name = $1 AND rebuild_state IS NOT NULL AND version <= $2
                           AND coalesce(rebuild_version, $2) = $2)",
    )
    .bind(projection.name())
    .bind(version)
    .fetch_one(pool)
    .await
}

/// Request a rebuild when an older version built the live tables and no rebuild of this
/// version or a newer one is under way. Returns whether it requested one.
pub async fn request_if_outdated(
    pool: &PgPool,
    projection: Projection,
    version: Version,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE projections.checkpoints
            SET rebuild_state = 'requested', rebuild_version = $2, last_error = NULL
          WHERE name = $1 AND version < $2
            AND (rebuild_state IS NULL OR coalesce(rebuild_version, 0) < $2)",
    )
    .bind(projection.name())
    .bind(version)
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        tracing::info!(
            projection = projection.name(),
            version,
            "live tables built by an older version: rebuilding"
        );
    }
    Ok(done.rows_affected() == 1)
}

/// Fresh shadow tables (primary keys only) and the rebuild checkpoint at zero. Progress is
/// shown against the log's head position (one index look-up, not a count of the whole log):
/// an upper bound of the events to read, since positions that rolled-back appends took are
/// never filled; the swap sets the total to the events applied.
async fn start(pool: &PgPool, projection: Projection, version: Version) -> Result<(), sqlx::Error> {
    for table in projection.tables() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {SHADOW}.{table}"))
            .execute(pool)
            .await?;
    }
    // On the pool, not in a transaction: `raw_sql` on a connection trips a higher-ranked
    // lifetime bound in sqlx 0.8, and the DDL needs no atomicity (a crash here restarts).
    sqlx::raw_sql(&projection.table_ddl(SHADOW))
        .execute(pool)
        .await?;
    let head = feed::head(pool).await?;
    sqlx::query(
        "UPDATE projections.checkpoints
            SET rebuild_state = 'running', rebuild_version = $2, rebuild_position = 0,
                rebuild_done = 0, rebuild_eps = 0, rebuild_started_at = now(),
                rebuild_total = $3
          WHERE name = $1",
    )
    .bind(projection.name())
    .bind(version)
    .bind(head)
    .execute(pool)
    .await?;
    tracing::info!(projection = projection.name(), version, "rebuild started");
    Ok(())
}

/// One job's side of the bulk load: apply every batch the reader sends. `Ok(false)` when
/// the rebuild stopped being this job's or failed on an event (recorded).
async fn load(
    pool: &PgPool,
    job: &Job,
    mut batches: mpsc::Receiver<Batch>,
) -> Result<bool, sqlx::Error> {
    let started = Instant::now();
    let mut done = 0_i64;
    let mut position = job.position;
    while let Some(batch) = batches.recv().await {
        // A job that resumed further on than the others skips what it has.
        let fresh = batch.partition_point(|e| e.position() <= position);
        let events = &batch[fresh..];
        if events.is_empty() {
            continue;
        }
        let mut tx = ordo_commands::db::begin(pool).await?;
        if !apply_or_record(pool, tx.as_mut(), job, events).await? {
            return Ok(false);
        }
        tx.commit().await?;
        position = last_checkpoint(events).global_position;
        done += events.len() as i64;
        let eps = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        sqlx::query("UPDATE projections.checkpoints SET rebuild_eps = $2 WHERE name = $1")
            .bind(job.projection.name())
            .bind(eps)
            .execute(pool)
            .await?;
    }
    Ok(true)
}

/// The job's rebuild position, if the rebuild is still this job's; with the checkpoint row
/// locked for the transaction when `lock`.
async fn own_position(
    tx: &mut sqlx::PgConnection,
    job: &Job,
    lock: bool,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!(
        "SELECT rebuild_position FROM projections.checkpoints
          WHERE name = $1 AND rebuild_state = 'running' AND rebuild_version = $2 {}",
        if lock { "FOR UPDATE" } else { "" }
    );
    sqlx::query_scalar(&sql)
        .bind(job.projection.name())
        .bind(job.version)
        .fetch_optional(&mut *tx)
        .await
}

async fn read(
    keys: &Keyring,
    tx: &mut sqlx::PgConnection,
    projection: Projection,
    position: i64,
    limit: i64,
) -> Result<Vec<Decoded>, sqlx::Error> {
    let want = feed::Want {
        event_types: Some(projection.event_types()),
        metadata: false,
    };
    let mut events = feed::read(tx, Checkpoint::at(position), limit, want).await?;
    keys.open_feed_on(tx, &mut events).await?;
    Ok(decode_all(events))
}

/// Apply `events` to the job's shadow tables and move its rebuild checkpoint, in `tx`.
/// `Ok(false)` when the rebuild stops here: no longer this job's, or an event cannot be
/// applied (its error recorded, as the live runner does, for status and a retry later).
async fn apply_or_record(
    pool: &PgPool,
    tx: &mut sqlx::PgConnection,
    job: &Job,
    events: &[Decoded],
) -> Result<bool, sqlx::Error> {
    if let Err(e) = job.projection.apply(tx, SHADOW, events, &job.keys).await {
        // The transaction is aborted; the error goes through the pool.
        record_error(pool, job.projection, e, events, true).await?;
        return Ok(false);
    }
    let moved = sqlx::query(
        "UPDATE projections.checkpoints
            SET rebuild_position = $3, rebuild_done = rebuild_done + $4,
                rebuild_total = greatest(rebuild_total, rebuild_done + $4)
          WHERE name = $1 AND rebuild_state = 'running' AND rebuild_version = $2",
    )
    .bind(job.projection.name())
    .bind(job.version)
    .bind(last_checkpoint(events).global_position)
    .bind(events.len() as i64)
    .execute(&mut *tx)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Replace the live tables with the shadow ones; the live checkpoint and version become the
/// rebuild's. Fails with a lock timeout if a reader holds a table longer than
/// [`SWAP_LOCK_TIMEOUT`].
async fn swap(tx: &mut sqlx::PgConnection, projection: Projection) -> Result<(), sqlx::Error> {
    db::lock_timeout(tx, SWAP_LOCK_TIMEOUT).await?;
    for table in projection.tables() {
        sqlx::query(&format!("DROP TABLE IF EXISTS {LIVE}.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {SHADOW}.{table} SET SCHEMA {LIVE}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE projections.checkpoints
            SET global_position = rebuild_position, version = rebuild_version,
                updated_at = now(), rebuild_state = NULL, rebuild_version = NULL,
                last_error = NULL, error_position = NULL, rebuild_total = rebuild_done
          WHERE name = $1",
    )
    .bind(projection.name())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

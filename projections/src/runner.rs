//! The projection runner: one active per projection across processes, checkpoint in the
//! same transaction as the read-model rows, stop-and-retry on a poison event. Rebuilds are
//! the [`crate::rebuild`] module's, which may run in another process than the live runner.
//!
//! Versions: a runner applies its code to the live tables unless a newer version built
//! them; then it stops leading (and leaves the lock to a process of that version).

use std::time::{Duration, Instant};

use sqlx::{Executor, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::watch;

use crate::model::{decode_all, ApplyError, Decoded, Projection, Version, LIVE};
use crate::shared::{SharedFeed, Slice};
use crate::status;
use ordo_commands::feed::{self, Checkpoint, Wakeup};
use ordo_commands::leader;
use ordo_commands::privacy::Keyring;

/// How often the leading runner refreshes its position and lag gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events per live batch.
    pub batch_size: i64,
    /// Events per rebuild batch (the bulk load's batches; the catch-up after it reads
    /// `batch_size`).
    pub rebuild_batch_size: i64,
    /// Longest wait for a notification before reading anyway.
    pub poll: Duration,
    /// How often a standby tries to take over, and the leader proves it still leads.
    pub heartbeat: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            rebuild_batch_size: 20_000,
            poll: Duration::from_millis(500),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Applied(usize),
    /// Nothing final to read.
    Idle,
    /// An event could not be applied; the error and position are recorded.
    Failed(String),
    /// A newer version of the read model built the live tables: this code leaves them alone.
    Superseded,
}

pub struct Runner {
    pool: PgPool,
    /// Opens the events' personal fields (ADR 0020); an erased customer's are withheld.
    keys: Keyring,
    projection: Projection,
    config: RunnerConfig,
    id: String,
    version: Version,
    /// The batches this runner shares with the process's other runners, if it does.
    shared: Option<SharedFeed>,
}

/// Create the live tables and the checkpoint row if they are missing (a fresh checkpoint
/// records `version` as the one building the tables). Takes no lock on tables that are
/// there with every index, so it never waits behind a VACUUM.
pub async fn prepare(pool: &PgPool, projection: Projection) -> Result<(), sqlx::Error> {
    prepare_version(pool, projection, projection.version()).await
}

pub(crate) async fn prepare_version(
    pool: &PgPool,
    projection: Projection,
    version: Version,
) -> Result<(), sqlx::Error> {
    // `CREATE INDEX IF NOT EXISTS` takes a SHARE lock on its table even when the index
    // exists: it would queue behind any VACUUM or ANALYZE of the table, and the read model's
    // writes behind it. So the DDL runs only when something it creates is missing.
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS r (name) WHERE to_regclass(name) IS NULL",
    )
    .bind(projection.relations(LIVE))
    .fetch_one(pool)
    .await?;
    if missing > 0 {
        // Two preparations of a fresh database at once (two processes starting, or a
        // runner beside a rebuild) would both run `CREATE TABLE IF NOT EXISTS`, and the
        // slower would fail on the catalog's unique index. The lock queues the second
        // behind the first, whose tables it then finds there.
        let mut tx = ordo_commands::db::begin(pool).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(projection.ddl_lock_key())
            .execute(&mut *tx)
            .await?;
        // Through `Executor::execute`, whose future is boxed: `raw_sql(..).execute(&mut *tx)`
        // trips rustc's higher-ranked lifetime check where the caller must be `Send`.
        let ddl = projection.ddl(LIVE);
        tx.as_mut().execute(sqlx::raw_sql(&ddl)).await?;
        tx.commit().await?;
    }
    sqlx::query(
        "INSERT INTO projections.checkpoints (name, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(projection.name())
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Lock the projection's checkpoint row for this transaction: its live position and the
/// version that built the live tables.
async fn lock_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
) -> Result<(Checkpoint, Version), sqlx::Error> {
    let (position, version): (i64, Version) = sqlx::query_as(
        "SELECT global_position, version FROM projections.checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(projection.name())
    .fetch_one(&mut **tx)
    .await?;
    Ok((Checkpoint::at(position), version))
}

pub(crate) fn last_checkpoint(events: &[Decoded]) -> Checkpoint {
    events
        .last()
        .map(|e| e.envelope.checkpoint)
        .unwrap_or_default()
}

impl Runner {
    pub fn new(pool: PgPool, projection: Projection, config: RunnerConfig) -> Self {
        Self {
            keys: Keyring::new(pool.clone(), None),
            pool,
            projection,
            config,
            id: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
                std::process::id()
            ),
            version: projection.version(),
            shared: None,
        }
    }

    /// Share what this runner reads with the other runners given the same [`SharedFeed`]
    /// (one read of the feed for every read model of the process). Its batches are opened
    /// with the shared feed's keys.
    pub fn with_shared_feed(mut self, shared: SharedFeed) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Run as if this code were `version` of the read model (tests of rolling deploys; a
    /// real process runs [`Projection::version`]).
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// Open sealed personal fields with these keys (by default only erasures are known:
    /// sealed fields stay sealed).
    pub fn with_keys(mut self, keys: Keyring) -> Self {
        self.keys = keys;
        self
    }

    /// Name this runner in status (default `host:pid`).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn projection(&self) -> Projection {
        self.projection
    }

    fn want(&self) -> feed::Want<'static> {
        feed::Want {
            event_types: Some(self.projection.event_types()),
            metadata: false,
        }
    }

    /// Apply the next batch (at most `limit` events) to the live tables.
    pub async fn step(&self, limit: i64) -> Result<Step, sqlx::Error> {
        self.step_reaching(limit).await.map(|(step, _)| step)
    }

    /// [`Runner::step`], and the position the read model stands at after it.
    async fn step_reaching(&self, limit: i64) -> Result<(Step, i64), sqlx::Error> {
        let mut tx = ordo_commands::db::begin_by_index(&self.pool).await?;
        let (checkpoint, built_by) = lock_checkpoint(&mut tx, self.projection).await?;
        let at = checkpoint.global_position;
        if built_by > self.version {
            return Ok((Step::Superseded, at));
        }
        // Full batches from the shared feed; single steps through a failed batch read alone.
        let shared = match &self.shared {
            Some(shared) if limit == self.config.batch_size => {
                shared.after(&mut tx, at, limit).await?
            }
            _ => None,
        };
        let events = match shared {
            Some(events) => events,
            None => {
                let mut events = feed::read(&mut tx, checkpoint, limit, self.want()).await?;
                self.keys.open_feed_on(&mut tx, &mut events).await?;
                Slice::whole(decode_all(events))
            }
        };
        if events.is_empty() {
            return Ok((Step::Idle, at));
        }
        match self
            .projection
            .apply(&mut tx, LIVE, &events, &self.keys)
            .await
        {
            Ok(()) => {
                let to = last_checkpoint(&events);
                sqlx::query(
                    "UPDATE projections.checkpoints
                        SET global_position = $2, updated_at = now(),
                            last_error = NULL, error_position = NULL
                      WHERE name = $1",
                )
                .bind(self.projection.name())
                .bind(to.global_position)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                status::announce(&self.pool).await;
                Ok((Step::Applied(events.len()), to.global_position))
            }
            Err(e) => {
                drop(tx);
                record_error(&self.pool, self.projection, e, &events, false)
                    .await
                    .map(|step| (step, at))
            }
        }
    }

    /// Run until `shutdown` turns true: stand by until this process holds the projection's
    /// advisory lock, then lead until the lock is lost.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = prepare_version(&self.pool, self.projection, self.version).await {
            tracing::warn!(projection = self.projection.name(), error = %e, "cannot prepare projection tables yet");
        }
        while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
            match self.try_lead(&mut shutdown).await {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.heartbeat) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Lead if the lock is free: returns `Ok(false)` when another process holds it.
    async fn try_lead(&self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, sqlx::Error> {
        let Some(mut lock) = leader::try_lock(&self.pool, self.projection.lock_key()).await? else {
            return Ok(false);
        };
        prepare_version(&self.pool, self.projection, self.version).await?;
        if self.superseded().await? {
            // A newer version serves: leave the lock to a process that runs it.
            lock.release().await;
            return Ok(false);
        }
        tracing::info!(projection = self.projection.name(), runner = %self.id, "leading projection");
        let result = self.lead(&mut lock.conn, shutdown).await;
        lock.release().await;
        result.map(|()| true)
    }

    async fn lead(
        &self,
        lock: &mut PgConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), sqlx::Error> {
        let mut wakeup = Wakeup::new(&self.pool);
        let mut last_beat = Instant::now() - self.config.heartbeat;
        let mut limit = self.config.batch_size;
        // After a failure, events go one at a time through what was the failed batch, so
        // the error lands on the exact event; then full batches again.
        let mut single_steps_left: i64 = 0;
        let mut backoff = Duration::from_millis(200);
        let mut last_gauges: Option<Instant> = None;
        loop {
            if last_gauges.is_none_or(|t| t.elapsed() >= GAUGES_EVERY) {
                status::export_gauges(&self.pool, self.projection).await;
                last_gauges = Some(Instant::now());
            }
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                return Ok(());
            }
            if last_beat.elapsed() >= self.config.heartbeat {
                // Proves the lock's session is alive; if it is not, leadership is lost.
                sqlx::query(
                    "UPDATE projections.checkpoints SET runner = $2, heartbeat_at = now() WHERE name = $1",
                )
                .bind(self.projection.name())
                .bind(&self.id)
                .execute(&mut *lock)
                .await?;
                last_beat = Instant::now();
            }
            // What this step will read up to at least: anything committed later raises the
            // known head above it.
            let head_at_step = wakeup.known_head();
            let (live, reached) = match self.step_reaching(limit).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "projection step failed");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            match live {
                Step::Applied(applied) => {
                    single_steps_left = (single_steps_left - 1).max(0);
                    let full = applied as i64 >= limit;
                    if single_steps_left <= 0 {
                        limit = self.config.batch_size;
                    }
                    backoff = Duration::from_millis(200);
                    if !full {
                        // Wait for news rather than step to find out.
                        let seen = head_at_step.max(reached);
                        tokio::select! {
                            _ = wakeup.linger_then_wait(seen, feed::LINGER, self.config.poll) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                Step::Failed(_) => {
                    limit = 1;
                    single_steps_left = self.config.batch_size;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Step::Idle => {
                    tokio::select! {
                        _ = wakeup.wait_beyond(head_at_step.max(reached), self.config.poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Step::Superseded => {
                    tracing::info!(
                        projection = self.projection.name(),
                        version = self.version,
                        "a newer version of the read model serves; standing down"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Whether a newer version than this code built the live tables.
    async fn superseded(&self) -> Result<bool, sqlx::Error> {
        let built_by: Version =
            sqlx::query_scalar("SELECT version FROM projections.checkpoints WHERE name = $1")
                .bind(self.projection.name())
                .fetch_one(&self.pool)
                .await?;
        Ok(built_by > self.version)
    }
}

/// Record why `projection` stopped (live or rebuild), unless the store is merely away.
pub(crate) async fn record_error(
    pool: &PgPool,
    projection: Projection,
    error: ApplyError,
    events: &[Decoded],
    rebuild: bool,
) -> Result<Step, sqlx::Error> {
    // The store being away is not the event's fault: no error to record, just retry.
    let error = match error {
        ApplyError::Db(db) if ordo_commands::error::is_unavailable(&db) => return Err(db),
        other => other,
    };
    let position = error
        .position()
        .or_else(|| events.first().map(Decoded::position));
    let message = if rebuild {
        format!("rebuild: {error}")
    } else {
        error.to_string()
    };
    tracing::error!(projection = projection.name(), position, error = %message, "projection stopped");
    sqlx::query(
        "UPDATE projections.checkpoints SET last_error = $2, error_position = $3 WHERE name = $1",
    )
    .bind(projection.name())
    .bind(&message)
    .bind(position)
    .execute(pool)
    .await?;
    Ok(Step::Failed(message))
}

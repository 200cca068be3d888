//! The projection runner: one active per projection across processes, checkpoint in the
//! same transaction as the read-model rows, stop-and-retry on a poison event, and rebuilds
//! into shadow tables that are swapped in once they have caught up.

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::watch;

use crate::model::{ApplyError, Projection, LIVE, SHADOW};
use ordo_commands::feed::{self, Checkpoint, FeedEvent, Wakeup};
use ordo_commands::leader;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events per live batch.
    pub batch_size: i64,
    /// Events per rebuild batch.
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
            rebuild_batch_size: 5000,
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
}

pub struct Runner {
    pool: PgPool,
    projection: Projection,
    config: RunnerConfig,
    id: String,
}

/// Create the live tables and the checkpoint row if they are missing.
pub async fn prepare(pool: &PgPool, projection: Projection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&projection.ddl(LIVE)).execute(pool).await?;
    sqlx::query("INSERT INTO projections.checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(projection.name())
        .execute(pool)
        .await?;
    Ok(())
}

async fn lock_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
    rebuild: bool,
) -> Result<Checkpoint, sqlx::Error> {
    let sql = if rebuild {
        "SELECT rebuild_position FROM projections.checkpoints WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT global_position FROM projections.checkpoints WHERE name = $1 FOR UPDATE"
    };
    let position: i64 = sqlx::query_scalar(sql)
        .bind(projection.name())
        .fetch_one(&mut **tx)
        .await?;
    Ok(Checkpoint::at(position))
}

fn last_checkpoint(events: &[FeedEvent]) -> Checkpoint {
    events.last().map(|e| e.checkpoint).unwrap_or_default()
}

impl Runner {
    pub fn new(pool: PgPool, projection: Projection, config: RunnerConfig) -> Self {
        Self {
            pool,
            projection,
            config,
            id: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
                std::process::id()
            ),
        }
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
        let mut tx = self.pool.begin().await?;
        let checkpoint = lock_checkpoint(&mut tx, self.projection, false).await?;
        let events = feed::read(&mut tx, checkpoint, limit, self.want()).await?;
        if events.is_empty() {
            return Ok(Step::Idle);
        }
        match self.projection.apply(&mut tx, LIVE, &events).await {
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
                Ok(Step::Applied(events.len()))
            }
            Err(e) => {
                drop(tx);
                self.record_error(e, &events, false).await
            }
        }
    }

    async fn record_error(
        &self,
        error: ApplyError,
        events: &[FeedEvent],
        rebuild: bool,
    ) -> Result<Step, sqlx::Error> {
        // The store being away is not the event's fault: no error to record, just retry.
        let error = match error {
            ApplyError::Db(db) if ordo_commands::error::is_unavailable(&db) => return Err(db),
            other => other,
        };
        let position = error
            .position()
            .or_else(|| events.first().map(|e| e.checkpoint.global_position));
        let message = if rebuild {
            format!("rebuild: {error}")
        } else {
            error.to_string()
        };
        tracing::error!(projection = self.projection.name(), position, error = %message, "projection stopped");
        sqlx::query(
            "UPDATE projections.checkpoints SET last_error = $2, error_position = $3 WHERE name = $1",
        )
        .bind(self.projection.name())
        .bind(&message)
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(Step::Failed(message))
    }

    /// Start a requested rebuild: fresh shadow tables, progress reset.
    async fn start_rebuild(&self) -> Result<(), sqlx::Error> {
        for table in self.projection.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {SHADOW}.{table}"))
                .execute(&self.pool)
                .await?;
        }
        // On the pool, not in a transaction: `raw_sql` on a connection trips a
        // higher-ranked lifetime bound in sqlx 0.8, and the DDL needs no atomicity.
        sqlx::raw_sql(&self.projection.ddl(SHADOW))
            .execute(&self.pool)
            .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE projections.checkpoints
                SET rebuild_state = 'running', rebuild_position = 0,
                    rebuild_done = 0, rebuild_eps = 0, rebuild_started_at = now(),
                    rebuild_total = (SELECT count(*) FROM event_store.events)
              WHERE name = $1",
        )
        .bind(self.projection.name())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(projection = self.projection.name(), "rebuild started");
        Ok(())
    }

    /// Apply the next batch to the shadow tables; once they have caught up with the log,
    /// swap them in for the live ones in one transaction.
    pub async fn rebuild_step(&self) -> Result<Step, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT rebuild_state FROM projections.checkpoints WHERE name = $1")
                .bind(self.projection.name())
                .fetch_one(&mut *tx)
                .await?;
        match state.as_deref() {
            Some("requested") => {
                drop(tx);
                self.start_rebuild().await?;
                return Ok(Step::Applied(0));
            }
            Some("running") => {}
            _ => return Ok(Step::Idle),
        }
        let checkpoint = lock_checkpoint(&mut tx, self.projection, true).await?;
        let events = feed::read(
            &mut tx,
            checkpoint,
            self.config.rebuild_batch_size,
            self.want(),
        )
        .await?;
        if events.is_empty() {
            self.swap(&mut tx).await?;
            tx.commit().await?;
            tracing::info!(projection = self.projection.name(), "rebuild swapped in");
            return Ok(Step::Applied(0));
        }
        match self.projection.apply(&mut tx, SHADOW, &events).await {
            Ok(()) => {
                let to = last_checkpoint(&events);
                sqlx::query(
                    "UPDATE projections.checkpoints
                        SET rebuild_position = $2,
                            rebuild_done = rebuild_done + $3,
                            rebuild_total = greatest(rebuild_total, rebuild_done + $3),
                            rebuild_eps = (rebuild_done + $3) / greatest(extract(epoch FROM now() - rebuild_started_at), 0.001)
                      WHERE name = $1",
                )
                .bind(self.projection.name())
                .bind(to.global_position)
                .bind(events.len() as i64)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Step::Applied(events.len()))
            }
            Err(e) => {
                drop(tx);
                self.record_error(e, &events, true).await
            }
        }
    }

    /// Replace the live tables with the shadow ones and adopt the shadow checkpoint.
    async fn swap(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        for table in self.projection.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {LIVE}.{table}"))
                .execute(&mut **tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {SHADOW}.{table} SET SCHEMA {LIVE}"))
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "UPDATE projections.checkpoints
                SET global_position = rebuild_position, updated_at = now(),
                    rebuild_state = NULL, last_error = NULL, error_position = NULL,
                    rebuild_total = rebuild_done
              WHERE name = $1",
        )
        .bind(self.projection.name())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Run until `shutdown` turns true: stand by until this process holds the projection's
    /// advisory lock, then lead until the lock is lost.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = prepare(&self.pool, self.projection).await {
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
        prepare(&self.pool, self.projection).await?;
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
        let mut wakeup = Wakeup::new(&self.pool).await;
        let mut last_beat = Instant::now() - self.config.heartbeat;
        let mut limit = self.config.batch_size;
        // After a failure, events go one at a time through what was the failed batch, so
        // the error lands on the exact event; then full batches again.
        let mut single_steps_left: i64 = 0;
        let mut backoff = Duration::from_millis(200);
        loop {
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
            let live = match self.step(limit).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "projection step failed");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let rebuilding = match self.rebuild_step().await {
                Ok(Step::Applied(_)) => true,
                Ok(Step::Failed(_)) => {
                    tokio::time::sleep(backoff).await;
                    false
                }
                Ok(Step::Idle) => false,
                Err(e) => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "rebuild step failed");
                    false
                }
            };
            match live {
                Step::Applied(_) => {
                    single_steps_left = (single_steps_left - 1).max(0);
                    if single_steps_left <= 0 {
                        limit = self.config.batch_size;
                    }
                    backoff = Duration::from_millis(200);
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
                Step::Idle if !rebuilding => {
                    tokio::select! {
                        _ = self.idle_wait(&mut wakeup) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Step::Idle => {}
            }
        }
    }

    /// Wait for new events: not at all if some committed since the last read, else until
    /// notified or the poll interval passes.
    async fn idle_wait(&self, wakeup: &mut Wakeup) {
        let pending = async {
            let position: i64 = sqlx::query_scalar(
                "SELECT global_position FROM projections.checkpoints WHERE name = $1",
            )
            .bind(self.projection.name())
            .fetch_one(&self.pool)
            .await?;
            feed::written_after(&self.pool, Checkpoint::at(position)).await
        };
        if !matches!(pending.await, Ok(true)) {
            wakeup.wait(self.config.poll).await;
        }
    }
}

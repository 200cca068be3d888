//! Projection status and lag, read-your-writes waits, and rebuild requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::model::{Projection, Version};
use ordo_commands::db::{per_database, PerDatabase};
use ordo_commands::feed::{self, Checkpoint};

/// A rebuild's progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildStatus {
    pub state: String,
    pub done: i64,
    /// The events to read, at most: the log's head position when the rebuild began (or
    /// `done`, if more were read since); `done` once swapped in.
    pub total: i64,
    /// `done` of `total`, 0 to 100.
    pub percent: f64,
    pub events_per_second: f64,
    /// Seconds left at the current rate, when it can be told.
    pub eta_seconds: Option<f64>,
    /// The version of the read model being built (none until a process takes it).
    #[schema(value_type = Option<i32>)]
    pub version: Option<Version>,
}

/// A read model's status and lag.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionStatus {
    /// `orders`, `payments` or `customers`.
    pub name: String,
    /// `running`, `standby` (no active runner heard from lately), `failed` or `rebuilding`.
    pub state: String,
    /// Global position of the last applied event.
    pub position: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub error_position: Option<i64>,
    pub runner: Option<String>,
    /// The version of the read model's code that built the tables serving now.
    #[schema(value_type = i32)]
    pub version: Version,
    pub rebuild: Option<RebuildStatus>,
}

/// `GET /v1/projections`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionList {
    pub items: Vec<ProjectionStatus>,
}

type Row = (
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    f64,
    Option<String>,
    bool,
    Version,
    Option<Version>,
);

/// The status of every projection (those never started show as `standby` at 0).
pub async fn all(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let mut out = Vec::new();
    for projection in Projection::ALL {
        out.push(one(pool, projection).await?);
    }
    Ok(out)
}

/// The projection's position and lag as gauges: its leading runner sets them as it goes
/// (about once a second), so a scrape of `/metrics` reads no database. Index lookups only
/// ([`feed::lag`]).
pub async fn export_gauges(pool: &PgPool, projection: Projection) {
    match one(pool, projection).await {
        Ok(status) => {
            let name = projection.name();
            metrics::gauge!("ordo_projection_position", "projection" => name)
                .set(status.position as f64);
            metrics::gauge!("ordo_projection_lag_events", "projection" => name)
                .set(status.lag_events as f64);
            metrics::gauge!("ordo_projection_lag_seconds", "projection" => name)
                .set(status.lag_seconds);
        }
        Err(e) => {
            tracing::debug!(projection = projection.name(), error = %e, "projection lag not measured")
        }
    }
}

pub async fn one(pool: &PgPool, projection: Projection) -> Result<ProjectionStatus, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT name, global_position, last_error, error_position,
                rebuild_state, rebuild_done, rebuild_total, rebuild_eps, runner,
                coalesce(heartbeat_at > now() - interval '10 seconds', false),
                version, rebuild_version
           FROM projections.checkpoints WHERE name = $1",
    )
    .bind(projection.name())
    .fetch_optional(pool)
    .await?;
    let Some((
        name,
        position,
        last_error,
        error_position,
        rebuild_state,
        done,
        total,
        eps,
        runner,
        alive,
        version,
        rebuild_version,
    )) = row
    else {
        let (lag_events, lag_seconds) = feed::lag(pool, Checkpoint::default()).await?;
        return Ok(ProjectionStatus {
            name: projection.name().into(),
            state: "standby".into(),
            position: 0,
            lag_events,
            lag_seconds,
            last_error: None,
            error_position: None,
            runner: None,
            version: projection.version(),
            rebuild: None,
        });
    };
    let (lag_events, lag_seconds) = feed::lag(pool, Checkpoint::at(position)).await?;
    let state = if last_error.is_some() {
        "failed"
    } else if rebuild_state.is_some() {
        "rebuilding"
    } else if alive {
        "running"
    } else {
        "standby"
    };
    let rebuild = rebuild_state.map(|state| RebuildStatus {
        state,
        done,
        total,
        percent: if total > 0 {
            (done as f64 * 100.0 / total as f64).min(100.0)
        } else {
            0.0
        },
        events_per_second: eps,
        eta_seconds: (eps > 0.0).then(|| (total - done).max(0) as f64 / eps),
        version: rebuild_version,
    });
    Ok(ProjectionStatus {
        name,
        state: state.into(),
        position,
        lag_events,
        lag_seconds,
        last_error,
        error_position,
        runner,
        version,
        rebuild,
    })
}

/// Whether `projection` has applied the event at `global_position` and every one before it
/// (positions are in commit order).
pub async fn reached(
    pool: &PgPool,
    projection: Projection,
    global_position: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(bool_or(global_position >= $2), false)
           FROM projections.checkpoints WHERE name = $1",
    )
    .bind(projection.name())
    .bind(global_position)
    .fetch_one(pool)
    .await
}

/// The channel on which a runner announces that it applied a batch, so that reads waiting
/// for `min_position` wake without polling (they then check their projection; the payload
/// is empty).
pub const PROJECTED_CHANNEL: &str = "ordo_projected";

/// Announce on [`PROJECTED_CHANNEL`] that a projection moved. After the batch's commit, not
/// inside it: a NOTIFY in a transaction serialises commits database-wide. One announcement
/// per database is in flight at a time in a process; the batches of every runner that commit
/// meanwhile share the next one, which the caller in flight sends (under load each batch's
/// announcement had been a transaction of its own, one for every six commands). A lost
/// announcement only delays a waiting read until its next check.
pub async fn announce(pool: &PgPool) {
    let state = announcing(pool);
    state.again.store(true, Ordering::SeqCst);
    while state.again.load(Ordering::SeqCst) {
        if state.in_flight.swap(true, Ordering::SeqCst) {
            // The caller in flight sends again once it is done.
            return;
        }
        state.again.store(false, Ordering::SeqCst);
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(PROJECTED_CHANNEL)
            .execute(pool)
            .await
        {
            tracing::debug!(error = %e, "cannot announce projection progress");
        }
        state.in_flight.store(false, Ordering::SeqCst);
    }
}

/// Whether an announcement is in flight, and whether another was asked for meanwhile.
#[derive(Default)]
struct Announcing {
    in_flight: AtomicBool,
    again: AtomicBool,
}

fn announcing(pool: &PgPool) -> Arc<Announcing> {
    static STATES: PerDatabase<Arc<Announcing>> = PerDatabase::new();
    per_database(&STATES, pool, Arc::default)
}

/// Ask the active runner to rebuild `projection`. `false` if one is already under way.
pub async fn request_rebuild(pool: &PgPool, projection: Projection) -> Result<bool, sqlx::Error> {
    sqlx::query("INSERT INTO projections.checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(projection.name())
        .execute(pool)
        .await?;
    let done = sqlx::query(
        "UPDATE projections.checkpoints SET rebuild_state = 'requested'
          WHERE name = $1 AND rebuild_state IS NULL",
    )
    .bind(projection.name())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

//! The database at start-up: created if missing, every module's migrations applied.

use std::time::Duration;

use anyhow::Context;
use ordo_commands::db::{self, PoolSettings};
use sqlx::migrate::MigrateError;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;

use crate::Config;

/// Every module's migrations, one sequence (each file names the schema it belongs to).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How long a migration waits for a lock before it gives up and is tried again. A migration
/// that alters a table waits for every transaction using it, and while it waits, every
/// later statement on the table queues behind it: one long report would stop the orders
/// read model for as long as it ran. Bounded, the stall lasts this long at most.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Create the database if it is missing, then apply pending migrations. PostgreSQL that
/// cannot be reached, or has no connection to spare ("too many clients"), is tried again
/// with exponential backoff for up to `db_start_timeout_secs`, so processes started
/// together (or before the database) wait instead of exiting. So is a migration that could
/// not take a table's lock within [`MIGRATION_LOCK_TIMEOUT`] (a long transaction on a
/// table it alters): it rolls back and lets the queue behind it pass. A process that finds
/// another one applying the migrations waits for it as long as that takes, since its wait
/// holds up no one.
pub async fn migrate(config: &Config) -> anyhow::Result<PgPool> {
    let pool = db::pool(
        config.database_url.expose(),
        &PoolSettings {
            max_connections: config.db_max_connections,
            acquire_timeout: Duration::from_secs(config.db_acquire_timeout_secs),
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(config.db_start_timeout_secs);
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times(),
    );
    let mut waited = false;
    loop {
        let attempt = async {
            db::ensure_database(config.database_url.expose())
                .await
                .context("cannot reach PostgreSQL to create the database")?;
            // Each statement's lock waits bounded, sqlx's advisory lock between migrating
            // processes too. `run_direct`, not `run`: the future `run` returns on a
            // connection is not `Send`, so a caller could not spawn `migrate`.
            let options = db::connect_options(config.database_url.expose())?.options([(
                "lock_timeout",
                MIGRATION_LOCK_TIMEOUT.as_millis().to_string(),
            )]);
            let mut conn = PgConnection::connect_with(&options)
                .await
                .context("cannot reach PostgreSQL to migrate")?;
            let migrated = MIGRATOR.run_direct(&mut conn).await;
            let _ = conn.close().await;
            migrated.context("migrations failed")
        };
        match attempt.await {
            Ok(()) => return Ok(pool),
            // Waiting in slices of MIGRATION_LOCK_TIMEOUT, without a deadline.
            Err(e) if lock_given_up(&e) == Some(Lock::Migrations) => {
                if !waited {
                    tracing::info!("another process is applying the migrations; waiting for it");
                    waited = true;
                }
            }
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                if lock_given_up(&e) == Some(Lock::Table) {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "a migration waited too long for a table and rolled back; trying again");
                } else {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "PostgreSQL not available yet");
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) if lock_given_up(&e) == Some(Lock::Table) => {
                return Err(e.context(format!(
                    "no migration attempt in {} s took its tables' locks within {} s: a long \
                     transaction holds a table it alters (see pg_locks and pg_stat_activity)",
                    config.db_start_timeout_secs,
                    MIGRATION_LOCK_TIMEOUT.as_secs()
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// A lock a migration attempt gave up waiting for ([`MIGRATION_LOCK_TIMEOUT`]).
#[derive(Debug, PartialEq, Eq)]
enum Lock {
    /// sqlx's advisory lock, which the process applying the migrations holds: sqlx reports
    /// a failure before the first migration as `Execute`.
    Migrations,
    /// A table a migration changes (`ExecuteMigration`).
    Table,
}

fn lock_given_up(error: &anyhow::Error) -> Option<Lock> {
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<MigrateError>()? {
            MigrateError::Execute(e) if db::is_lock_timeout(e) => Some(Lock::Migrations),
            MigrateError::ExecuteMigration(e, _) if db::is_lock_timeout(e) => Some(Lock::Table),
            _ => None,
        })
}

/// Whether a start-up failure may pass: the server unreachable, out of connections, or a
/// migration's lock wait timed out. A bad URL or a failed migration will not. A
/// `MigrateError` names its cause as its source, so the chain reaches the `sqlx::Error`
/// under it.
fn retryable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::Tls(_)) => true,
            // 53300 too_many_connections, 57P03 cannot_connect_now (starting up),
            // 55P03 lock_not_available (MIGRATION_LOCK_TIMEOUT).
            Some(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("53300" | "57P03" | "55P03"))
            }
            _ => false,
        }
    })
}

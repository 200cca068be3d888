//! The database at start-up: created if missing, every module's migrations applied.

use std::time::Duration;

use anyhow::Context;
use ordo_commands::db::{self, PoolSettings};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::Config;

/// Every module's migrations, one sequence (each file names the schema it belongs to).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Create the database if it is missing, then apply pending migrations. PostgreSQL that
/// cannot be reached, or has no connection to spare ("too many clients"), is tried again
/// with exponential backoff for up to `db_start_timeout_secs`, so processes started
/// together (or before the database) wait instead of exiting.
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
    loop {
        let attempt = async {
            db::ensure_database(config.database_url.expose())
                .await
                .context("cannot reach PostgreSQL to create the database")?;
            MIGRATOR.run(&pool).await.context("migrations failed")
        };
        match attempt.await {
            Ok(()) => return Ok(pool),
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "PostgreSQL not available yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a start-up failure may pass: the server unreachable, or out of connections.
/// A bad URL or a failed migration will not.
fn retryable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => true,
            // 53300 too_many_connections, 57P03 cannot_connect_now (starting up).
            Some(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("53300" | "57P03"))
            }
            Some(sqlx::Error::Migrate(m)) => matches!(
                m.as_ref(),
                sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_))
            ),
            _ => false,
        }
    })
}

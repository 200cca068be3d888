//! The database at start-up: created if missing, every module's migrations applied.

use std::time::Duration;

use anyhow::Context;
use ordo_commands::db::{self, PoolSettings};
use sqlx::PgPool;

use crate::Config;

/// Every module's migrations, one sequence (each file names the schema it belongs to).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Create the database if it is missing, then apply pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<PgPool> {
    db::ensure_database(&config.database_url)
        .await
        .context("cannot reach PostgreSQL to create the database")?;
    let pool = db::pool(
        &config.database_url,
        &PoolSettings {
            max_connections: config.db_max_connections,
            acquire_timeout: Duration::from_secs(config.db_acquire_timeout_secs),
        },
    )?;
    MIGRATOR.run(&pool).await.context("migrations failed")?;
    Ok(pool)
}

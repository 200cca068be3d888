//! Connecting to PostgreSQL and creating the database when it is missing.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Pool settings. `acquire_timeout` bounds how long a request waits for PostgreSQL before
/// it is answered 503.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 32,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(database_url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500)))
}

/// A lazily connecting pool: the process starts even while PostgreSQL is down, and each
/// request that needs it fails fast instead. Connections are not pinged on every acquire (a
/// round trip per query on the hot path): a dead connection fails its query, which is
/// answered 503, and the pool replaces it.
pub fn pool(database_url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(connect_options(database_url)?))
}

/// Create the database named in `database_url` if it does not exist yet.
pub async fn ensure_database(database_url: &str) -> Result<(), sqlx::Error> {
    let options = connect_options(database_url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}

/// Drop a database, disconnecting its sessions (tests clean up with this).
pub async fn drop_database(database_url: &str) -> Result<(), sqlx::Error> {
    let options = connect_options(database_url)?;
    let name = options.get_database().unwrap_or_default().to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres")).await?;
    let drop = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    sqlx::query(&drop).execute(&mut admin).await?;
    admin.close().await
}

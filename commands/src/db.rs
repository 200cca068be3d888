//! Connecting to PostgreSQL and creating the database when it is missing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Transaction};

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
    let options = PgConnectOptions::from_str(database_url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500));
    let stated = states_ssl_mode(database_url) || std::env::var_os("PGSSLMODE").is_some();
    Ok(without_tls_on_loopback(options, stated))
}

/// Whether the URL names an `sslmode` (or sqlx's `ssl-mode`).
fn states_ssl_mode(database_url: &str) -> bool {
    url::Url::parse(database_url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(name, _)| name == "sslmode" || name == "ssl-mode")
    })
}

/// A connection that never leaves the machine gains nothing from TLS and pays for it in
/// CPU on both ends (a tenth of all CPU per command with every role in the process, ADR
/// 0008). Unless a mode was stated (in the URL or `PGSSLMODE`), a loopback host is
/// connected to in the clear; libpq's default, `prefer`, would encrypt it. Every other
/// host keeps that default.
fn without_tls_on_loopback(options: PgConnectOptions, stated: bool) -> PgConnectOptions {
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback && !stated {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    }
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

/// Values a process keeps once per database (tests run many databases in one process),
/// for [`per_database`].
pub type PerDatabase<T> = OnceLock<Mutex<HashMap<String, T>>>;

/// The value `values` holds for the database `pool` connects to (host, port and database),
/// made by `new` on first use.
pub fn per_database<T: Clone>(
    values: &'static PerDatabase<T>,
    pool: &PgPool,
    new: impl FnOnce() -> T,
) -> T {
    let options = pool.connect_options();
    let database = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    values
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(database)
        .or_insert_with(new)
        .clone()
}

/// Begin a transaction on a pooled connection; use this instead of `PgPool::begin`.
///
/// `PgPool::begin` is not cancel-safe in sqlx 0.8 on PostgreSQL (upstream issue
/// transact-rs/sqlx#4393): if the caller is dropped after `BEGIN` went out but before its
/// answer came back (an aborted task, a `select!`, a client that hung up), sqlx neither
/// rolls back nor closes the session, and the pool hands that connection, still inside
/// the transaction, to the next borrower. Its statements then run in a transaction nobody
/// commits: their writes are invisible to everyone else and their locks are held until
/// some later borrower happens to end it (a projection runner blocked for good behind a
/// `CREATE INDEX IF NOT EXISTS` was how it showed). Here the `BEGIN` runs in a task of its
/// own, which always finishes: a caller dropped meanwhile drops the finished transaction,
/// which rolls it back before the connection goes back to the pool.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place that may call it
    let begun = tokio::spawn(async move { pool.begin().await }).await;
    match begun {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// [`begin`] for a reader's batch, which looks rows up by key (`id = ANY($1)`) on a
/// long-lived pooled connection: the transaction runs with `enable_seqscan = off`, so that
/// every plan the connection caches for it reads by index, however small the table was
/// when the plan was made. PostgreSQL caches a generic plan once it costs no more than
/// planning each run afresh, and makes it again only when the table's statistics change.
/// Where no autovacuum analyzes a table as it grows, a plan made while it held a few hundred
/// rows (a sequential scan, rightly then) stays: in a run with 60,000 customers the
/// customers read model read 130 million rows by sequential scan, about 29,000 per batch.
/// The appender's statements run the same way.
///
/// A statement with no index to use still scans its table, but the setting prices that
/// scan at 10^10, far past `jit_above_cost`: PostgreSQL would compile it with LLVM at every
/// run (24 ms per batch on average under load for the analytics worker's one-row read of
/// `analytics.rebuild`, a third of PostgreSQL's time per command). The batch's short
/// statements never gain from JIT, so the transaction turns it off too.
pub async fn begin_by_index(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    begin_with(
        pool,
        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL jit = off",
    )
    .await
}

/// [`begin`] with `statement` in place of a bare `BEGIN`: one simple query, so it may hold
/// more statements (the appender takes its lock in the same round trip). Cancel-safe the
/// same way.
pub async fn begin_with(
    pool: &PgPool,
    statement: &'static str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place that may call it
    let begun = tokio::spawn(async move { pool.begin_with(statement).await }).await;
    match begun {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
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
            // Another process created it between our check and our CREATE: it committed
            // first (42P04 duplicate_database), or both inserted the catalog row at once
            // and ours lost on its unique index once the other committed (23505).
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
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

/// Analyze `table` (schema-qualified, one of Ordo's own) when its statistics are missing or
/// far behind it: changed by more rows since its last analyze than four times the rows it
/// then had (at least 1,000). Returns whether it analyzed.
///
/// For the queue tables (the webhook and mail outboxes), whose claims must stay cheap
/// whatever the backlog. Autovacuum analyzes a table at most once a minute
/// (`autovacuum_naptime`), and a busy outbox outgrows an empty table's statistics within
/// seconds: the planner then takes an endpoint's backlog for a row or two and picks plans
/// that walk all of it once per row. Afterwards autovacuum keeps up; this catches what it
/// has not seen yet. A session reports its changes to the statistics a second or so after
/// it makes them (at most ten), so this lags by as much.
///
/// An analyze waits at most [`ANALYZE_LOCK_TIMEOUT`] for the table: while another session
/// holds it (a vacuum, another process's analyze), this one is skipped and answers `false`;
/// the next call tries again.
pub async fn analyze_if_behind(pool: &PgPool, table: &'static str) -> Result<bool, sqlx::Error> {
    let behind: Option<bool> = sqlx::query_scalar(
        "SELECT s.n_mod_since_analyze >= greatest(1000, 4 * c.reltuples)
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
          WHERE s.relid = $1::regclass",
    )
    .bind(table)
    .fetch_optional(pool)
    .await?;
    if behind != Some(true) {
        return Ok(false);
    }
    let mut tx = begin(pool).await?;
    lock_timeout(&mut tx, ANALYZE_LOCK_TIMEOUT).await?;
    // `table` is a name in Ordo's code, never input; regclass checked that it exists.
    match sqlx::query(&format!("ANALYZE {table}"))
        .execute(&mut *tx)
        .await
    {
        Ok(_) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(e) if is_lock_timeout(&e) => {
            tracing::debug!(table, "analyze skipped: another session holds the table");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// How long [`analyze_if_behind`] waits for a table another session holds.
pub const ANALYZE_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// For the rest of the transaction on `conn`, a statement waits at most `timeout` for a
/// lock, then fails ([`is_lock_timeout`]). For a statement whose lock would hold up others
/// while it waits: a lock queued on a table holds up every later one that conflicts with
/// it, so waiting long for an exclusive lock stalls even the table's readers.
pub async fn lock_timeout(conn: &mut PgConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SET LOCAL lock_timeout = {}", timeout.as_millis()))
        .execute(conn)
        .await?;
    Ok(())
}

/// How long the swap of rebuilt tables (a read model's, analytics') waits for each live
/// table. Dropping a table needs its exclusive lock, which waits for every transaction that
/// read the table, and every later read of it queues behind that wait: an analyst's query of
/// minutes would stall every read of the table as long. Past this the swap gives up, and is
/// tried again a moment later.
pub const SWAP_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether `error` is a [`lock_timeout`] that ran out (`lock_not_available`).
pub fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}

/// Keep `table`'s statistics current ([`analyze_if_behind`] every `every`) until `shutdown`
/// turns true. Run it as a task of its own beside the loop that claims from `table`: an
/// analyze of a large outbox takes about a second, and that loop must not wait for it.
pub async fn keep_analyzed(
    pool: PgPool,
    table: &'static str,
    every: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    ordo_runtime::process::every(every, shutdown, || async {
        if let Err(e) = analyze_if_behind(&pool, table).await {
            tracing::warn!(table, error = %e, "cannot analyze");
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(database_url: &str) -> PgSslMode {
        let options = PgConnectOptions::from_str(database_url).unwrap();
        without_tls_on_loopback(options, states_ssl_mode(database_url)).get_ssl_mode()
    }

    #[test]
    fn a_loopback_host_is_connected_to_in_the_clear_unless_a_mode_is_stated() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/ordo",
            "postgres://postgres@127.0.0.53/ordo",
            "postgres://postgres@[::1]:5432/ordo",
            "postgres://postgres@localhost/ordo",
        ] {
            assert!(matches!(mode(url), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1:5432/ordo?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://postgres@localhost/ordo?ssl-mode=prefer"),
            PgSslMode::Prefer
        ));
    }

    #[test]
    fn any_other_host_keeps_the_default_or_the_stated_mode() {
        // Parsed only, never connected to.
        let default = PgConnectOptions::new().get_ssl_mode();
        for url in [
            "postgres://postgres@db.example.com/ordo",
            "postgres://postgres@10.0.0.5/ordo",
            "postgres://postgres@[2001:db8::1]:5432/ordo",
        ] {
            assert_eq!(format!("{:?}", mode(url)), format!("{default:?}"), "{url}");
        }
        assert!(matches!(
            mode("postgres://postgres@10.0.0.5/ordo?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
    }
}

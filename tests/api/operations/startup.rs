//! A process that starts before PostgreSQL can take it waits with backoff instead of
//! exiting; one pointed at a server that never comes gives up after its timeout. A
//! migration that a long transaction holds up steps aside for the statements behind it.

use std::time::{Duration, Instant};

use ordo::{Config, ProcessRole};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{eventually, fresh_database_url, migrations_before, postgres_base};

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// From `after` on, a TCP forwarder on 127.0.0.1:`port` to the test PostgreSQL server.
fn postgres_appears_on(port: u16, after: Duration) -> tokio::task::JoinHandle<()> {
    let target = postgres_base()
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

fn config(port: u16, database: &str, timeout_secs: u64) -> Config {
    Config {
        database_url: format!("postgres://postgres@127.0.0.1:{port}/{database}").into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        roles: vec![ProcessRole::Api],
        db_start_timeout_secs: timeout_secs,
        ..Config::defaults()
    }
}

#[tokio::test]
async fn a_process_started_before_postgres_is_reachable_waits_for_it_and_migrates() {
    let port = free_port();
    let database = format!("ordo_test_{}", uuid::Uuid::new_v4().simple());
    let forwarder = postgres_appears_on(port, Duration::from_millis(1500));
    let started = Instant::now();
    let pool = ordo::migrate(&config(port, &database, 30)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(migrated > 0);
    pool.close().await;
    forwarder.abort();
    ordo_commands::db::drop_database(&format!("{}/{database}", postgres_base()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_process_gives_up_on_postgres_after_its_start_timeout() {
    let port = free_port();
    let started = Instant::now();
    let error = ordo::migrate(&config(port, "ordo_never", 1))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        format!("{error:#}").contains("cannot reach PostgreSQL"),
        "{error:#}"
    );
}

/// An upgrade whose migration alters a table that a long report is reading: the migration
/// waits for the report, but never longer than `MIGRATION_LOCK_TIMEOUT` at a time, so the
/// reads queued behind its lock pass; it applies once the report ends, and both processes
/// that were upgrading start. A process that finds another one applying the migrations
/// waits for it past its start timeout: that wait holds up no one.
#[tokio::test]
async fn a_migration_held_up_by_a_long_transaction_lets_the_reads_behind_it_pass() {
    use sqlx::{Connection, PgConnection};

    let (database_url, pool) = migrated_before_0178().await;
    let applied = async || -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = 178)")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let report = long_report(&pool).await;
    let config = Config {
        db_start_timeout_secs: 300,
        ..config_for(&database_url)
    };
    // Two processes upgrading at once: whichever finds the other applying the migrations
    // waits for its advisory lock, in slices of the same timeout.
    let migrating = [config.clone(), config.clone()]
        .map(|config| tokio::spawn(async move { ordo::migrate(&config).await.map(|_| ()) }));
    // The migrations' advisory lock (sqlx's), held by the migration while it waits.
    let mut migrations_lock: Option<i64> = None;
    eventually(
        Duration::from_secs(60),
        "the migration waits for the report's lock",
        async || {
            migrations_lock = sqlx::query_scalar(
                "SELECT (a.classid::bigint << 32) | a.objid::bigint
                   FROM pg_locks w
                   JOIN pg_locks a ON a.pid = w.pid AND a.locktype = 'advisory' AND a.granted
                  WHERE NOT w.granted AND w.relation = 'integration.outbox_totals'::regclass",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            migrations_lock.is_some()
        },
    )
    .await;

    // Unbounded, this read would queue behind the migration until the report ends.
    let mut reader = PgConnection::connect(&database_url).await.unwrap();
    sqlx::query("SET statement_timeout = '30s'")
        .execute(&mut reader)
        .await
        .unwrap();
    let read = sqlx::query("SELECT count(*) FROM integration.outbox_totals")
        .execute(&mut reader)
        .await;
    assert!(
        read.is_ok(),
        "the read queued behind the migration: {read:?}"
    );
    assert!(!applied().await && !migrating.iter().any(|m| m.is_finished()));

    report.rollback().await.unwrap();
    for process in migrating {
        process.await.unwrap().unwrap();
    }
    assert!(applied().await);

    // Another process applying the migrations, for longer than the start timeout.
    let mut other = PgConnection::connect(&database_url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(migrations_lock)
        .execute(&mut other)
        .await
        .unwrap();
    let config = Config {
        db_start_timeout_secs: 1,
        ..config
    };
    let waiting = tokio::spawn(async move { ordo::migrate(&config).await.map(|_| ()) });
    let mut attempts = std::collections::HashSet::new();
    eventually(
        Duration::from_secs(60),
        "a second attempt, past the start timeout, waits for the migrations' lock",
        async || {
            let waiting: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_locks
                  WHERE locktype = 'advisory' AND NOT granted
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            attempts.extend(waiting);
            attempts.len() >= 2
        },
    )
    .await;
    assert!(!waiting.is_finished());
    other.close().await.unwrap();
    waiting.await.unwrap().unwrap();
    reader.close().await.unwrap();
    pool.close().await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}

/// A report that outlasts the start timeout: the process exits and names the cause.
#[tokio::test]
async fn a_process_gives_up_on_a_migration_held_up_past_its_start_timeout() {
    let (database_url, pool) = migrated_before_0178().await;
    let report = long_report(&pool).await;
    let config = Config {
        db_start_timeout_secs: 1,
        ..config_for(&database_url)
    };
    let error = ordo::migrate(&config).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("a long transaction holds a table it alters"),
        "{error:#}"
    );
    report.rollback().await.unwrap();
    pool.close().await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}

/// Processes of a new deployment that start at the same moment, before their database
/// exists, all start: one creates the database and the others find it. Two `CREATE
/// DATABASE` at once make the slower fail on the catalog's unique index, which a process
/// took for a fault and exited on.
#[tokio::test]
async fn processes_started_at_once_before_their_database_exists_all_start() {
    for _ in 0..3 {
        let database_url = fresh_database_url();
        let config = config_for(&database_url);
        let starts = (0..4).map(|_| ordo::migrate(&config));
        for started in futures::future::join_all(starts).await {
            let pool = started.expect("every process starts");
            pool.close().await;
        }
        ordo_commands::db::drop_database(&database_url)
            .await
            .unwrap();
    }
}

/// A fresh database with every migration before 0178, which alters
/// integration.outbox_totals (the workers' page reads it), and a pool on it.
async fn migrated_before_0178() -> (String, sqlx::PgPool) {
    let database_url = fresh_database_url();
    ordo_commands::db::ensure_database(&database_url)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    assert!(ordo::MIGRATOR
        .migrations
        .iter()
        .any(|m| m.version == 178 && m.sql.contains("ALTER TABLE integration.outbox_totals")));
    migrations_before(178).run(&pool).await.unwrap();
    (database_url, pool)
}

/// A transaction that has read integration.outbox_totals and stays open.
async fn long_report(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut report = ordo_commands::db::begin(pool).await.unwrap();
    sqlx::query("SELECT count(*) FROM integration.outbox_totals")
        .execute(&mut *report)
        .await
        .unwrap();
    report
}

fn config_for(database_url: &str) -> Config {
    Config {
        database_url: database_url.to_owned().into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        roles: vec![ProcessRole::Api],
        ..Config::defaults()
    }
}

//! A process that starts before PostgreSQL can take it waits with backoff instead of
//! exiting; one pointed at a server that never comes gives up after its timeout.

use std::time::{Duration, Instant};

use ordo::{Config, ProcessRole};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::postgres_base;

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

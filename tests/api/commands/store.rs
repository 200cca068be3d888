//! The event store's table: append-only in the database itself, extended columns filled.

use ordo_api::Role::Storefront;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_database_refuses_update_delete_and_truncate_on_events() {
    let app = spawn_app().await;
    app.register_customer().await;
    for statement in [
        "UPDATE event_store.events SET payload = '{}'",
        "DELETE FROM event_store.events",
        "TRUNCATE event_store.events",
    ] {
        let err = sqlx::query(statement).execute(&app.pool).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn every_event_gets_a_position_transaction_id_event_id_and_time() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "x"}),
    )
    .await
    .assert_status(200);
    let rows: Vec<(
        i64,
        String,
        uuid::Uuid,
        chrono::DateTime<chrono::Utc>,
        String,
    )> = sqlx::query_as(
        "SELECT global_position, tx_id::text, event_id, recorded_at, event_type || '/' || event_version
           FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), 4, "event ids are unique");
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].3 <= w[1].3));
    // Each event at the schema version its type is written at now.
    let current: Vec<String> = ordo_domain::schema::event_schemas()
        .iter()
        .map(|s| format!("{}/{}", s.event_type, s.version))
        .collect();
    assert!(rows
        .iter()
        .all(|r| r.1.parse::<u64>().is_ok() && current.contains(&r.4)));
}

/// A transaction whose caller went away before `BEGIN` was answered leaves nothing open on
/// the pooled connection: the pool's next borrower writes for everyone to see. (sqlx 0.8's
/// own `PgPool::begin` handed that connection on still inside the transaction; this is
/// what kept a projection runner blocked for good after runners were killed.)
#[tokio::test]
async fn a_begin_abandoned_in_flight_leaves_no_transaction_open_on_the_pooled_connection() {
    use sqlx::Connection;
    use std::task::Poll;
    let url = crate::helpers::fresh_database_url();
    ordo_commands::db::ensure_database(&url).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut observer = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut abandoned = 0;
    for round in 0..50 {
        if abandoned == 5 {
            break;
        }
        {
            let begin = ordo_commands::db::begin(&pool);
            tokio::pin!(begin);
            // Poll until the server has run the BEGIN, then go away before reading the
            // answer (a caller dropped by `select!`, a timeout or an aborted task).
            let in_flight = loop {
                if let Poll::Ready(begun) = futures::poll!(&mut begin) {
                    drop(begun);
                    break false;
                }
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
                        .bind(pid)
                        .fetch_one(&mut observer)
                        .await
                        .unwrap();
                if state.as_deref() == Some("idle in transaction") {
                    break true;
                }
            };
            if !in_flight {
                continue;
            }
            abandoned += 1;
        }
        let table = format!("seen_{round}");
        sqlx::query(&format!("CREATE TABLE {table} ()"))
            .execute(&pool)
            .await
            .unwrap();
        let visible: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&table)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        assert!(
            visible,
            "round {round}: the write ran inside a transaction left open by the abandoned BEGIN"
        );
    }
    assert_eq!(abandoned, 5, "BEGIN was abandoned in flight five times");
    observer.close().await.unwrap();
    pool.close().await;
    ordo_commands::db::drop_database(&url).await.unwrap();
}

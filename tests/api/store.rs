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
        "SELECT global_position, tx_id::text, event_id, recorded_at, event_version
           FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), 4, "event ids are unique");
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].3 <= w[1].3));
    assert!(rows
        .iter()
        .all(|r| r.1.parse::<u64>().is_ok() && r.4 == "1"));
}

//! Support's audit trail: history with metadata and paging, state at a version or time.

use ordo_api::Role::{Storefront, Support};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn history_lists_every_event_with_its_metadata() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let placed = app
        .post_with(
            Storefront,
            "/v1/orders",
            crate::helpers::order_body(&customer),
            &[
                ("traceparent", traceparent),
                ("idempotency-key", "audit-1"),
                ("x-request-id", "req-audit-1"),
            ],
        )
        .await;
    let order = placed.id();
    app.confirm(&order).await;
    app.cancel(&order, "duplicate").await;

    let history = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    history.assert_status(200);
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(history.body["next_cursor"], serde_json::Value::Null);
    let first = &items[0];
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["type"], "order.placed");
    assert_eq!(first["schema_version"], 2);
    assert_eq!(first["position"], placed.body["position"]);
    assert!(first["event_id"]
        .as_str()
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()));
    assert!(first["recorded_at"].is_string());
    assert_eq!(first["data"]["total"], 2999);
    assert_eq!(first["data"]["lines"][0]["line_total"], 2500);
    assert!(
        first["data"].get("type").is_none(),
        "data holds the event's fields only"
    );
    let meta = &first["metadata"];
    assert_eq!(
        meta["actor"],
        json!({"name": "test-storefront", "role": "storefront"})
    );
    assert_eq!(meta["traceparent"], traceparent);
    assert_eq!(meta["idempotency_key"], "audit-1");
    assert_eq!(meta["request_id"], "req-audit-1");
    assert!(meta["correlation_id"].is_string() && meta["causation_id"].is_string());
    assert_eq!(items[2]["metadata"]["actor"]["role"], "support");
    assert_eq!(items[2]["data"]["reason"], "duplicate");
    let positions: Vec<i64> = items
        .iter()
        .map(|i| i["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn history_pages_with_a_cursor() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let payment = app.authorized_payment(&order, 2999).await;
    for _ in 0..3 {
        app.capture(&payment, 100).await;
    }
    // created, authorized, 3 × captured
    let page1 = app
        .get(Support, &format!("/v1/payments/{payment}/history?limit=2"))
        .await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 2);
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_owned();
    let page2 = app
        .get(
            Support,
            &format!("/v1/payments/{payment}/history?limit=2&after={cursor}"),
        )
        .await;
    let page3_cursor = page2.body["next_cursor"].as_str().unwrap().to_owned();
    let page3 = app
        .get(
            Support,
            &format!("/v1/payments/{payment}/history?limit=2&after={page3_cursor}"),
        )
        .await;
    let sequences: Vec<i64> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| {
            p.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["sequence"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert_eq!(page3.body["next_cursor"], serde_json::Value::Null);

    app.get(Support, &format!("/v1/payments/{payment}/history?limit=0"))
        .await
        .assert_problem(400, "bad-query");
    app.get(Support, &format!("/v1/payments/{payment}/history?after=x"))
        .await
        .assert_problem(400, "bad-query");
    app.get(
        Support,
        &format!("/v1/payments/{}/history", uuid::Uuid::new_v4()),
    )
    .await
    .assert_problem(404, "not-found");
}

#[tokio::test]
async fn state_is_folded_at_a_version_or_an_instant() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    app.confirm(&order).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "r"}),
    )
    .await
    .assert_status(200);

    let v1 = app
        .get(Support, &format!("/v1/orders/{order}/state?version=1"))
        .await;
    v1.assert_status(200);
    assert_eq!(v1.body["status"], "placed");
    assert_eq!(v1.body["version"], 1);
    assert_eq!(v1.header("etag"), Some("\"1\""));

    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = app
        .get(
            Support,
            &format!("/v1/orders/{order}/state?at={}", at.replace('+', "%2B")),
        )
        .await;
    then.assert_status(200);
    assert_eq!(then.body["status"], "confirmed");
    assert_eq!(then.body["version"], 2);

    let now = app.get(Support, &format!("/v1/orders/{order}/state")).await;
    assert_eq!(now.body["status"], "cancelled");

    app.get(Support, &format!("/v1/orders/{order}/state?version=9"))
        .await
        .assert_problem(404, "not-found");
    app.get(
        Support,
        &format!("/v1/orders/{order}/state?at=2000-01-01T00:00:00Z"),
    )
    .await
    .assert_problem(404, "not-found");
    app.get(Support, &format!("/v1/orders/{order}/state?at=yesterday"))
        .await
        .assert_problem(400, "bad-query");
    let customer_state = app
        .get(
            Support,
            &format!("/v1/customers/{customer}/state?version=1"),
        )
        .await;
    assert_eq!(customer_state.body["name"], "Ada Lovelace");
}

/// The blocks a statement touched, under `EXPLAIN (ANALYZE, BUFFERS)` with `id` bound.
async fn blocks_touched(pool: &sqlx::PgPool, sql: &str, id: String) -> (i64, serde_json::Value) {
    let explained: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    let plan = &explained[0]["Plan"];
    let blocks = ["Shared Hit Blocks", "Shared Read Blocks"]
        .iter()
        .map(|k| plan[*k].as_i64().unwrap())
        .sum();
    (blocks, explained)
}

#[tokio::test]
async fn the_consoles_reads_of_the_log_find_a_stream_and_an_orders_payments_by_index() {
    let app = crate::helpers::spawn_app_with(|c| c.roles = vec![ordo::ProcessRole::Api]).await;
    // 10,000 orders and 10,000 payments, two for each of the first 5,000 orders.
    let uuid = async |name: &str| -> uuid::Uuid {
        sqlx::query_scalar("SELECT md5($1)::uuid")
            .bind(name)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    for sql in [
        "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type,
                event_version, payload, metadata)
         SELECT 'order', md5('o' || g)::uuid::text, 1, 'order.placed', '1', '{}', '{}'
           FROM generate_series(1, 10000) g",
        "INSERT INTO event_store.events (aggregate_type, aggregate_id, sequence, event_type,
                event_version, payload, metadata)
         SELECT 'payment', md5('p' || g)::uuid::text, 1, 'payment.created', '1',
                jsonb_build_object('order_id', md5('o' || (1 + g % 5000))::uuid::text), '{}'
           FROM generate_series(1, 10000) g",
        "ANALYZE event_store.events",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let (order, payment) = (uuid("o7").await, uuid("p6").await);
    let kind = |id| ordo_commands::history::stream_kind(&app.pool, id);
    assert_eq!(kind(order).await.unwrap().as_deref(), Some("order"));
    assert_eq!(kind(payment).await.unwrap().as_deref(), Some("payment"));
    assert_eq!(kind(uuid::Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(
        ordo_commands::history::payment_ids_of_order(&app.pool, order)
            .await
            .unwrap(),
        [payment.to_string(), uuid("p5006").await.to_string()]
    );

    // An id that is no stream: one probe of the log's key per kind, not a walk of the key
    // from its start (which touched every one of its pages).
    let (blocks, explained) = blocks_touched(
        &app.pool,
        ordo_commands::history::STREAM_KIND,
        uuid::Uuid::now_v7().to_string(),
    )
    .await;
    assert!(
        blocks <= 20,
        "finding no stream touched {blocks} blocks: {explained}"
    );
    // An order's payments: their entries in `events_payments_by_order`, not the log.
    let (blocks, explained) = blocks_touched(
        &app.pool,
        ordo_commands::history::PAYMENTS_OF_ORDER,
        order.to_string(),
    )
    .await;
    assert!(
        blocks <= 20,
        "an order's two payments touched {blocks} blocks: {explained}"
    );
}

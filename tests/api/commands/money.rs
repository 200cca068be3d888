//! Money beyond one order: an amount is capped at 10^15 minor units (a 422 naming the
//! field), and sums over many orders at the cap — a customer's lifetime spend, a sales
//! bucket — pass 2^63 without an overflow, a stuck projection or a dead letter.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Analyst, Storefront, Support};
use ordo_workers::{Worker, WorkerRunner};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};
use crate::nats::setup;

const MAX: i64 = 1_000_000_000_000_000;

fn order_of(customer: &str, lines: &[(i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (quantity, unit_price))| {
            json!({"sku": format!("SKU-{i}"), "name": "Gold", "quantity": quantity, "unit_price": unit_price})
        })
        .collect();
    json!({"customer_id": customer, "currency": "EUR", "lines": lines})
}

fn fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str())
        .collect()
}

#[tokio::test]
async fn an_amount_beyond_ten_to_the_fifteen_minor_units_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;

    let price = app
        .post(
            Storefront,
            "/v1/orders",
            order_of(&customer, &[(1, MAX + 1)]),
        )
        .await;
    price.assert_problem(422, "validation");
    assert_eq!(fields(&price.body), ["lines[0].unit_price"]);

    let line = app
        .post(Storefront, "/v1/orders", order_of(&customer, &[(2, MAX)]))
        .await;
    line.assert_problem(422, "validation");
    assert_eq!(fields(&line.body), ["lines[0]"]);

    let total = app
        .post(
            Storefront,
            "/v1/orders",
            order_of(&customer, &[(1, MAX / 2 + 1), (1, MAX / 2)]),
        )
        .await;
    total.assert_problem(422, "validation");
    assert_eq!(fields(&total.body), ["lines"]);

    let at_the_cap = app
        .post(
            Storefront,
            "/v1/orders",
            order_of(&customer, &[(1, MAX / 2), (1, MAX / 2)]),
        )
        .await;
    at_the_cap.assert_status(201);
    let order = at_the_cap.id();
    let payment = app
        .post(
            Storefront,
            "/v1/payments",
            json!({"order_id": order, "amount": MAX + 1, "currency": "EUR", "method": "card"}),
        )
        .await;
    payment.assert_problem(422, "validation");
    assert_eq!(fields(&payment.body), ["amount"]);
}

/// An amount or a quantity is a JSON integer as written. A number with a decimal point
/// would be read through a floating-point number, which rounds (`2999.0000000000001` would
/// become 2999), so it is refused with the field named rather than rounded.
#[tokio::test]
async fn an_amount_or_a_quantity_written_with_a_decimal_point_is_refused() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let line = |quantity: Value, unit_price: Value| {
        json!({"customer_id": customer, "currency": "EUR",
               "lines": [{"sku": "SKU-1", "name": "Gold", "quantity": quantity, "unit_price": unit_price}]})
    };
    for (body, field) in [
        (line(json!(1), json!(2999.0)), "lines[0].unit_price"),
        (line(json!(2.0), json!(2999)), "lines[0].quantity"),
    ] {
        let refused = app.post(Storefront, "/v1/orders", body).await;
        refused.assert_problem(422, "validation");
        assert_eq!(fields(&refused.body), [field]);
    }
    let placed = app
        .post(Storefront, "/v1/orders", line(json!(1), json!(2999)))
        .await;
    placed.assert_status(201);
    let payment = app
        .post(
            Storefront,
            "/v1/payments",
            json!({"order_id": placed.id(), "amount": 2999.0, "currency": "EUR", "method": "card"}),
        )
        .await;
    payment.assert_problem(422, "validation");
    assert_eq!(fields(&payment.body), ["amount"]);
}

#[tokio::test]
async fn sums_of_thousands_of_orders_at_the_cap_pass_two_to_the_sixty_three_exactly() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api, ProcessRole::Projector]).await;
    let customer = app.register_customer().await;
    // 9,300 × 10^15 = 9.3 × 10^18 > i64::MAX (≈ 9.22 × 10^18), still a u64 in JSON.
    let orders: u64 = 9_300;
    let placed: Vec<u16> = stream::iter(0..orders)
        .map(|_| {
            let body = order_of(&customer, &[(1, MAX)]);
            let app = &app;
            async move {
                app.post(Storefront, "/v1/orders", body)
                    .await
                    .status
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(placed.iter().all(|s| *s == 201), "every order is placed");
    let expected = u128::from(orders) * MAX as u128;

    // The customer 360 (a read model, i128 in numeric columns).
    let profile = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    profile.assert_status(200);
    let eur = &profile.body["spent"]["EUR"];
    assert_eq!(eur["gross"].as_u64().map(u128::from), Some(expected));
    assert_eq!(eur["net"].as_u64().map(u128::from), Some(expected));
    assert_eq!(eur["average_order_value"], json!(MAX));
    assert_eq!(profile.body["order_count"], json!(orders));
    let projections = app.get(Admin, "/v1/projections").await;
    for item in projections.body["items"].as_array().unwrap() {
        assert_eq!(item["last_error"], Value::Null, "{item}");
    }

    // The sales buckets (the analytics worker, numeric columns), through JetStream.
    let events: i64 = app.event_count().await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner =
        WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.processed")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if done == events {
            break;
        }
        assert!(Instant::now() < deadline, "analytics: {done} of {events}");
        runner.step(500, Duration::from_millis(200)).await.unwrap();
    }
    for granularity in ["day", "hour"] {
        let sales = app
            .get(
                Analyst,
                &format!("/v1/analytics/sales?granularity={granularity}&from=2000-01-01T00:00:00Z"),
            )
            .await;
        sales.assert_status(200);
        let items = sales.body["items"].as_array().unwrap();
        let gross: u128 = items
            .iter()
            .map(|i| u128::from(i["gross"].as_u64().expect("a whole number")))
            .sum();
        assert_eq!(gross, expected, "{granularity}");
    }
    let letters = app.get(Admin, "/v1/dead-letters").await;
    letters.assert_status(200);
    assert_eq!(letters.body["items"], json!([]));
    s.cleanup().await;
}

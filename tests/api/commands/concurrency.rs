//! Concurrent commands against one stream: sequences stay contiguous, every answer is a
//! success, 409 or 412, and nothing is applied twice.

use futures::future::join_all;
use ordo_api::Role::Storefront;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_without_process_manager};

/// An order of 50 units of one SKU, confirmed and fully authorized.
async fn order_of_fifty(app: &crate::helpers::TestApp) -> String {
    let customer = app.register_customer().await;
    let order = app
        .post(
            Storefront,
            "/v1/orders",
            json!({"customer_id": customer, "currency": "EUR",
                   "lines": [{"sku": "BOLT", "name": "Bolt", "quantity": 50, "unit_price": 10}]}),
        )
        .await
        .assert_status(201)
        .id();
    app.confirm(&order).await;
    app.authorized_payment(&order, 500).await;
    order
}

#[tokio::test]
async fn fifty_concurrent_shipments_of_one_order_apply_each_at_most_once() {
    let app = spawn_app_without_process_manager().await;
    let order = order_of_fifty(&app).await;
    let path = format!("/v1/orders/{order}/ship");
    let body = json!({"carrier": "DHL", "tracking_number": "T", "lines": [{"sku": "BOLT", "quantity": 1}]});

    let responses = join_all((0..50).map(|_| app.post(Storefront, &path, body.clone()))).await;

    let mut ok = 0;
    for r in &responses {
        match r.status.as_u16() {
            200 => ok += 1,
            409 => assert!(
                ["write-conflict", "order-already-shipped"].contains(&r.problem()),
                "{:?}",
                r.body
            ),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert!(ok >= 1);
    let sequences = app.sequences("order", &order).await;
    let expected: Vec<i64> = (1..=sequences.len() as i64).collect();
    assert_eq!(sequences, expected, "sequences are contiguous");
    assert_eq!(sequences.len(), 2 + ok, "one event per successful shipment");

    let view = app
        .get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await;
    assert_eq!(
        view.body["lines"][0]["shipped"], ok,
        "shipped units equal successful commands"
    );
    let versions: std::collections::HashSet<_> = responses
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.len(), ok, "each success saw its own version");
}

#[tokio::test]
async fn fifty_concurrent_commands_pinned_to_one_version_let_exactly_one_through() {
    let app = spawn_app_without_process_manager().await;
    let order = order_of_fifty(&app).await;
    let path = format!("/v1/orders/{order}/ship");
    let body = json!({"carrier": "DHL", "tracking_number": "T", "lines": [{"sku": "BOLT", "quantity": 1}]});

    let responses = join_all(
        (0..50).map(|_| app.post_with(Storefront, &path, body.clone(), &[("if-match", "\"2\"")])),
    )
    .await;

    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1);
    for r in responses.iter().filter(|r| r.status != 200) {
        r.assert_problem(412, "stale-version");
    }
    assert_eq!(app.sequences("order", &order).await, [1, 2, 3]);
}

#[tokio::test]
async fn concurrent_captures_never_exceed_the_authorization() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let payment = app.authorized_payment(&order, 300).await;
    let path = format!("/v1/payments/{payment}/capture");

    let responses =
        join_all((0..50).map(|_| app.post(Storefront, &path, json!({"amount": 10})))).await;

    let ok = responses.iter().filter(|r| r.status == 200).count() as i64;
    for r in responses.iter().filter(|r| r.status != 200) {
        r.assert_status(409);
        assert!(["write-conflict", "capture-exceeds-authorized"].contains(&r.problem()));
    }
    let view = app
        .get_fresh(Storefront, &format!("/v1/payments/{payment}"))
        .await;
    assert_eq!(view.body["captured"], ok * 10);
    assert!(ok * 10 <= 300);
    let sequences = app.sequences("payment", &payment).await;
    assert_eq!(sequences, (1..=2 + ok).collect::<Vec<_>>());
}

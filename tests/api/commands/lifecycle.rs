//! The whole order and payment lifecycles over HTTP.

use ordo_api::Role::{Storefront, Support};
use serde_json::json;

use crate::helpers::{order_body, spawn_app, spawn_app_without_process_manager};

#[tokio::test]
async fn an_order_goes_from_placement_to_delivery() {
    let app = spawn_app_without_process_manager().await;
    let customer = app.register_customer().await;

    let placed = app
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await;
    placed.assert_status(201);
    let order = placed.id();
    assert_eq!(
        placed.header("location"),
        Some(format!("/v1/orders/{order}").as_str())
    );
    assert_eq!(placed.header("etag"), Some("\"1\""));
    assert_eq!(placed.body["version"], 1);
    assert!(placed.body["position"].as_i64().unwrap() > 0);
    assert!(placed.header("x-request-id").is_some());

    let confirmed = app
        .post(
            Storefront,
            &format!("/v1/orders/{order}/confirm"),
            json!({}),
        )
        .await;
    confirmed.assert_status(200);
    assert_eq!(confirmed.body["version"], 2);
    assert!(confirmed.body["position"].as_i64() > placed.body["position"].as_i64());

    // Not paid yet: shipping is refused.
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "DHL", "tracking_number": "T1"}),
    )
    .await
    .assert_problem(409, "order-not-paid");

    app.captured_payment(&order, 2999).await;

    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "DHL", "tracking_number": "T1"}),
    )
    .await
    .assert_status(200);
    let delivered = app
        .post(
            Storefront,
            &format!("/v1/orders/{order}/deliver"),
            json!({}),
        )
        .await;
    delivered.assert_status(200);
    assert_eq!(delivered.body["version"], 4);

    let view = app
        .get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await;
    view.assert_status(200);
    assert_eq!(view.body["status"], "delivered");
    assert_eq!(view.body["fulfillment_status"], "delivered");
    assert_eq!(view.body["payment_status"], "paid");
    assert_eq!(view.body["total"], 2999);
    assert_eq!(view.body["currency"], "EUR");
    assert_eq!(view.body["line_count"], 2);
    assert_eq!(view.body["version"], 4);
    assert_eq!(view.header("etag"), Some("\"4\""));

    assert_eq!(
        app.event_types("order", &order).await,
        [
            "order.placed",
            "order.confirmed",
            "order.shipped",
            "order.delivered"
        ]
    );
    // A delivered order takes no further lifecycle command.
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "late"}),
    )
    .await
    .assert_problem(409, "order-delivered");
}

#[tokio::test]
async fn an_order_ships_in_parts_and_is_delivered_only_when_all_has_shipped() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    app.authorized_payment(&order, 2999).await;

    let ship = |lines: serde_json::Value| json!({"carrier": "UPS", "tracking_number": "P1", "lines": lines});
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        ship(json!([{"sku": "MUG-1", "quantity": 1}])),
    )
    .await
    .assert_status(200);
    let view = app
        .get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await;
    assert_eq!(view.body["status"], "shipped");
    assert_eq!(view.body["fulfillment_status"], "partially_shipped");
    assert_eq!(view.body["payment_status"], "authorized");

    app.post(
        Storefront,
        &format!("/v1/orders/{order}/deliver"),
        json!({}),
    )
    .await
    .assert_problem(409, "order-not-fully-shipped");
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        ship(json!([{"sku": "MUG-1", "quantity": 2}])),
    )
    .await
    .assert_problem(409, "shipment-exceeds-ordered");
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        ship(json!([{"sku": "NOPE", "quantity": 1}])),
    )
    .await
    .assert_problem(422, "validation");
    // Cancelling after a shipment is refused.
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "changed mind"}),
    )
    .await
    .assert_problem(409, "order-already-shipped");

    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        ship(json!([{"sku": "MUG-1", "quantity": 1}, {"sku": "PEN-2", "quantity": 1}])),
    )
    .await
    .assert_status(200);
    let view = app
        .get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await;
    assert_eq!(view.body["fulfillment_status"], "shipped");
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/deliver"),
        json!({}),
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn a_payment_is_captured_and_refunded_in_parts() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let payment = app.payment(&order, 2999).await;
    let path = |action: &str| format!("/v1/payments/{payment}/{action}");

    app.post(Storefront, &path("capture"), json!({"amount": 100}))
        .await
        .assert_problem(409, "payment-not-authorized");
    app.post(
        Storefront,
        &path("authorize"),
        json!({"provider_reference": "psp-9", "amount": 3000}),
    )
    .await
    .assert_problem(409, "authorization-exceeds-amount");
    app.post(
        Storefront,
        &path("authorize"),
        json!({"provider_reference": "psp-9", "amount": 2500}),
    )
    .await
    .assert_status(200);
    app.post(Storefront, &path("capture"), json!({"amount": 2000}))
        .await
        .assert_status(200);
    app.post(Storefront, &path("capture"), json!({"amount": 600}))
        .await
        .assert_problem(409, "capture-exceeds-authorized");
    app.post(Storefront, &path("capture"), json!({"amount": 500}))
        .await
        .assert_status(200);
    app.post(Storefront, &path("void"), json!({}))
        .await
        .assert_problem(409, "payment-already-captured");
    app.post(
        Storefront,
        &path("refund"),
        json!({"amount": 3000, "reason": "too much"}),
    )
    .await
    .assert_problem(409, "refund-exceeds-captured");
    app.post(
        Storefront,
        &path("refund"),
        json!({"amount": 500, "reason": "damaged mug"}),
    )
    .await
    .assert_status(200);

    let view = app
        .get_fresh(Storefront, &format!("/v1/payments/{payment}"))
        .await;
    view.assert_status(200);
    assert_eq!(view.body["status"], "partially_refunded");
    assert_eq!(view.body["amount"], 2999);
    assert_eq!(view.body["authorized"], 2500);
    assert_eq!(view.body["captured"], 2500);
    assert_eq!(view.body["refunded"], 500);
    assert_eq!(view.body["order_id"], order.as_str());

    app.post(
        Storefront,
        &path("refund"),
        json!({"amount": 2000, "reason": "returned"}),
    )
    .await
    .assert_status(200);
    let view = app
        .get_fresh(Storefront, &format!("/v1/payments/{payment}"))
        .await;
    assert_eq!(view.body["status"], "refunded");
    let order_view = app
        .get_fresh(Storefront, &format!("/v1/orders/{order}"))
        .await;
    assert_eq!(order_view.body["payment_status"], "refunded");
}

#[tokio::test]
async fn pending_payments_fail_and_authorized_ones_are_voided() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;

    let failing = app.payment(&order, 2999).await;
    app.post(
        Storefront,
        &format!("/v1/payments/{failing}/fail"),
        json!({"reason": "card declined"}),
    )
    .await
    .assert_status(200);
    app.post(
        Storefront,
        &format!("/v1/payments/{failing}/authorize"),
        json!({"provider_reference": "x"}),
    )
    .await
    .assert_problem(409, "payment-not-pending");

    let voided = app.authorized_payment(&order, 2999).await;
    app.post(
        Storefront,
        &format!("/v1/payments/{voided}/void"),
        json!({}),
    )
    .await
    .assert_status(200);
    app.post(
        Storefront,
        &format!("/v1/payments/{voided}/capture"),
        json!({"amount": 1}),
    )
    .await
    .assert_problem(409, "payment-voided");
    // Neither payment covers the order any more.
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "DHL", "tracking_number": "T"}),
    )
    .await
    .assert_problem(409, "order-not-paid");
}

#[tokio::test]
async fn support_cancels_an_order_and_it_takes_no_further_commands() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    app.cancel(&order, "customer called").await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/confirm"),
        json!({}),
    )
    .await
    .assert_problem(409, "order-cancelled");
    app.post(
        Storefront,
        "/v1/payments",
        json!({"order_id": order, "amount": 10, "currency": "EUR", "method": "card"}),
    )
    .await
    .assert_problem(409, "order-cancelled");
    let view = app.get_fresh(Support, &format!("/v1/orders/{order}")).await;
    assert_eq!(view.body["status"], "cancelled");
    let state = app.get(Support, &format!("/v1/orders/{order}/state")).await;
    assert_eq!(state.body["cancellation_reason"], "customer called");
}

#[tokio::test]
async fn customers_are_registered_and_take_support_notes() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let created = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"customer_id": id, "email": "Ada@Example.COM", "name": " Ada ", "phone": "+44 1"}),
        )
        .await;
    created.assert_status(201);
    assert_eq!(created.id(), id);
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/customers/{id}").as_str())
    );

    app.post(
        Storefront,
        "/v1/customers",
        json!({"customer_id": id, "email": "ada@example.com", "name": "Ada"}),
    )
    .await
    .assert_problem(409, "already-exists");

    app.post(
        Support,
        &format!("/v1/customers/{id}/notes"),
        json!({"text": "called about delivery"}),
    )
    .await
    .assert_status(201);
    let view = app.get_fresh(Support, &format!("/v1/customers/{id}")).await;
    view.assert_status(200);
    assert_eq!(view.body["email"], "Ada@example.com");
    assert_eq!(view.body["name"], "Ada");
    assert_eq!(view.body["notes_count"], 1);
    let state = app.get(Support, &format!("/v1/customers/{id}/state")).await;
    assert_eq!(state.body["notes"][0]["text"], "called about delivery");
}

#[tokio::test]
async fn if_match_with_a_stale_version_is_refused_with_412() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    let path = format!("/v1/orders/{order}/confirm");

    app.post_with(Storefront, &path, json!({}), &[("if-match", "\"7\"")])
        .await
        .assert_problem(412, "stale-version");
    let ok = app
        .post_with(Storefront, &path, json!({}), &[("if-match", "\"1\"")])
        .await;
    ok.assert_status(200);
    assert_eq!(ok.header("etag"), Some("\"2\""));
    app.post_with(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "x"}),
        &[("if-match", "\"1\"")],
    )
    .await
    .assert_problem(412, "stale-version");
    app.post_with(Storefront, &path, json!({}), &[("if-match", "three")])
        .await
        .assert_problem(400, "bad-header");
    assert_eq!(app.sequences("order", &order).await, [1, 2]);
}

#[tokio::test]
async fn a_payment_must_be_in_its_orders_currency_and_an_order_needs_a_known_customer() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let wrong = app
        .post(
            Storefront,
            "/v1/payments",
            json!({"order_id": order, "amount": 10, "currency": "USD", "method": "card"}),
        )
        .await;
    wrong.assert_problem(422, "validation");
    assert_eq!(wrong.body["errors"][0]["field"], "currency");

    let unknown = app
        .post(
            Storefront,
            "/v1/payments",
            json!({"order_id": uuid::Uuid::new_v4(), "amount": 10, "currency": "EUR", "method": "card"}),
        )
        .await;
    unknown.assert_problem(422, "validation");
    assert_eq!(unknown.body["errors"][0]["field"], "order_id");

    let nobody = app
        .post(
            Storefront,
            "/v1/orders",
            order_body(&uuid::Uuid::new_v4().to_string()),
        )
        .await;
    nobody.assert_problem(422, "validation");
    assert_eq!(nobody.body["errors"][0]["field"], "customer_id");
}

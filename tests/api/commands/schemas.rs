//! Every event a full lifecycle stores matches its checked-in schema: the stored JSON is
//! what the relay puts on NATS (less the `type` tag), so this is the consumers' contract.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ordo_api::Role::{Admin, Storefront, Support};
use serde_json::{json, Value};

use crate::helpers::{order_body, spawn_app, TestApp};

fn validator(file: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/events")
        .join(file);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("schemas/events/{file} is missing for a stored event"));
    let schema: Value = serde_json::from_slice(&bytes).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

async fn ok(app: &TestApp, role: ordo_api::Role, path: &str, body: Value) {
    let resp = app.post(role, path, body).await;
    assert!(resp.status.is_success(), "{path}: {resp:?}");
}

#[tokio::test]
async fn every_stored_event_of_a_full_lifecycle_matches_its_schema() {
    let app = spawn_app().await;

    // A customer with a phone and a note.
    let customer = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": "Ada@Example.COM", "name": "Ada Lovelace", "phone": "+49 30 1234"}),
        )
        .await
        .assert_status(201)
        .id();
    ok(
        &app,
        Support,
        &format!("/v1/customers/{customer}/notes"),
        json!({"text": "prefers morning delivery"}),
    )
    .await;

    // Paid in two captures, shipped in two parts, delivered, partly refunded.
    let order = app.place_order(&customer).await;
    app.confirm(&order).await;
    let payment = app.authorized_payment(&order, 2999).await;
    for amount in [1000, 1999] {
        app.capture(&payment, amount).await;
    }
    ok(
        &app,
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "DHL", "tracking_number": "T1", "lines": [{"sku": "MUG-1", "quantity": 1}]}),
    )
    .await;
    ok(
        &app,
        Storefront,
        &format!("/v1/orders/{order}/ship"),
        json!({"carrier": "DHL", "tracking_number": "T2"}),
    )
    .await;
    app.deliver(&order).await;
    ok(
        &app,
        Admin,
        &format!("/v1/payments/{payment}/refund"),
        json!({"amount": 500, "reason": "a scratched mug"}),
    )
    .await;

    // No shipping address; the payment fails and the order is cancelled.
    let mut body = order_body(&customer);
    body.as_object_mut().unwrap().remove("shipping_address");
    let cancelled = app
        .post(Storefront, "/v1/orders", body)
        .await
        .assert_status(201)
        .id();
    let failing = app.payment(&cancelled, 2999).await;
    ok(
        &app,
        Storefront,
        &format!("/v1/payments/{failing}/fail"),
        json!({"reason": "card declined"}),
    )
    .await;
    ok(
        &app,
        Support,
        &format!("/v1/orders/{cancelled}/cancel"),
        json!({"reason": "customer changed their mind"}),
    )
    .await;

    // An authorization released before capture.
    let voided = app.confirmed_order().await;
    let released = app.authorized_payment(&voided, 2999).await;
    ok(
        &app,
        Storefront,
        &format!("/v1/payments/{released}/void"),
        json!({}),
    )
    .await;

    // A customer's personal data erased.
    let erased = app.register_customer().await;
    ok(
        &app,
        ordo_api::Role::Admin,
        &format!("/v1/customers/{erased}/erase"),
        json!({}),
    )
    .await;

    // The process manager records the orders' payment statuses on their own: wait for
    // every event type to be stored, then read the whole log.
    let all: BTreeSet<String> = ordo_domain::schema::event_schemas()
        .iter()
        .map(|s| s.event_type.to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = stored(&app).await;
        let types: BTreeSet<String> = rows.iter().map(|(t, _, _)| t.clone()).collect();
        if types == all {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the scenario stores every event type; missing {:?}",
            all.difference(&types).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut validators = BTreeMap::new();
    let mut failures = Vec::new();
    for (event_type, version, payload) in &rows {
        let file = format!("{event_type}.v{version}.json");
        let validator = validators
            .entry(file.clone())
            .or_insert_with(|| validator(&file));
        let mut body = payload.clone();
        body.as_object_mut().unwrap().remove("type");
        for instance in [payload, &body] {
            for error in validator.iter_errors(instance) {
                failures.push(format!("{file}: {error} at {}", error.instance_path()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `(event_type, event_version, payload)` of every stored event, in log order.
async fn stored(app: &TestApp) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT event_type, event_version, payload FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

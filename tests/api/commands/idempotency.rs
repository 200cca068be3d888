//! `Idempotency-Key`: replay without new events, mismatch, in flight, scoping.

use futures::future::join_all;
use ordo_api::Role::{Admin, Storefront};
use serde_json::json;

use crate::helpers::{order_body, spawn_app};

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_answer_without_new_events() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let key = [("idempotency-key", "place-1")];

    let first = app
        .post_with(Storefront, "/v1/orders", order_body(&customer), &key)
        .await;
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let events = app.event_count().await;

    let second = app
        .post_with(Storefront, "/v1/orders", order_body(&customer), &key)
        .await;
    second.assert_status(201);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(app.event_count().await, events, "a replay writes no event");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let key = [("idempotency-key", "k-2")];
    app.post_with(Storefront, "/v1/orders", order_body(&customer), &key)
        .await
        .assert_status(201);
    let mut other = order_body(&customer);
    other["currency"] = json!("USD");
    app.post_with(Storefront, "/v1/orders", other, &key)
        .await
        .assert_problem(422, "idempotency-key-reused");
    // Same body on another route is another request too.
    app.post_with(Storefront, "/v1/customers", order_body(&customer), &key)
        .await
        .assert_problem(422, "idempotency-key-reused");
}

#[tokio::test]
async fn key_order_and_whitespace_do_not_make_another_request() {
    let app = spawn_app().await;
    let key = ("idempotency-key", "k-3");
    let send = |raw: &'static str| {
        app.client
            .post(app.url("/v1/customers"))
            .bearer_auth(app.key(Storefront))
            .header("content-type", "application/json")
            .header(key.0, key.1)
            .body(raw)
            .send()
    };
    let a = crate::helpers::read(
        send(r#"{"email":"x@example.com","name":"X"}"#)
            .await
            .unwrap(),
    )
    .await;
    let b = crate::helpers::read(
        send("{ \"name\": \"X\",\n \"email\": \"x@example.com\" }")
            .await
            .unwrap(),
    )
    .await;
    a.assert_status(201);
    b.assert_status(201);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(a.body, b.body);
}

#[tokio::test]
async fn refusals_are_replayed_too() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let key = [("idempotency-key", "ship-unpaid")];
    let body = json!({"carrier": "DHL", "tracking_number": "1"});
    let first = app
        .post_with(
            Storefront,
            &format!("/v1/orders/{order}/ship"),
            body.clone(),
            &key,
        )
        .await;
    first.assert_problem(409, "order-not-paid");
    // Paying in between does not change the answer to the same request.
    app.authorized_payment(&order, 2999).await;
    let second = app
        .post_with(Storefront, &format!("/v1/orders/{order}/ship"), body, &key)
        .await;
    second.assert_problem(409, "order-not-paid");
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn keys_are_scoped_per_api_key() {
    let app = spawn_app().await;
    let key = [("idempotency-key", "shared")];
    let a = app
        .post_with(
            Storefront,
            "/v1/customers",
            json!({"email": "a@example.com", "name": "A"}),
            &key,
        )
        .await;
    let b = app
        .post_with(
            Admin,
            "/v1/customers",
            json!({"email": "a@example.com", "name": "A"}),
            &key,
        )
        .await;
    a.assert_status(201);
    b.assert_status(201);
    assert_ne!(
        a.id(),
        b.id(),
        "another API key's request is another request"
    );
    assert_eq!(b.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn concurrent_duplicates_run_once() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let before = app.event_count().await;
    let key = [("idempotency-key", "burst")];
    let responses = join_all(
        (0..20).map(|_| app.post_with(Storefront, "/v1/orders", order_body(&customer), &key)),
    )
    .await;

    let created: Vec<_> = responses.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty());
    for r in &responses {
        match r.status.as_u16() {
            201 => assert_eq!(r.body["id"], created[0].body["id"]),
            409 => assert_eq!(r.problem(), "idempotency-key-in-flight"),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(
        app.event_count().await,
        before + 1,
        "exactly one order was placed"
    );
    // Once settled, a retry replays.
    let retry = app
        .post_with(Storefront, "/v1/orders", order_body(&customer), &key)
        .await;
    retry.assert_status(201);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body["id"], created[0].body["id"]);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400() {
    let app = spawn_app().await;
    let long = "k".repeat(300);
    app.post_with(
        Storefront,
        "/v1/customers",
        json!({"email": "a@example.com", "name": "A"}),
        &[("idempotency-key", &long)],
    )
    .await
    .assert_problem(400, "bad-header");
}

#[tokio::test]
async fn events_record_the_idempotency_key_in_their_metadata() {
    let app = spawn_app().await;
    let resp = app
        .post_with(
            Storefront,
            "/v1/customers",
            json!({"email": "m@example.com", "name": "M"}),
            &[("idempotency-key", "meta-1")],
        )
        .await;
    let id = resp.id();
    let meta: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM event_store.events WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(meta["idempotency_key"], "meta-1");
    assert_eq!(meta["actor_role"], "storefront");
}

#[tokio::test]
async fn many_concurrent_keyed_commands_do_not_starve_the_pool() {
    // More keyed requests at once than the pool has connections: each holds a lock
    // connection while its command needs another, which must not deadlock into 503s.
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let keys: Vec<String> = (0..60).map(|i| format!("many-{i}")).collect();
    let headers: Vec<[(&str, &str); 1]> = keys
        .iter()
        .map(|k| [("idempotency-key", k.as_str())])
        .collect();
    let responses = join_all(
        headers
            .iter()
            .map(|h| app.post_with(Storefront, "/v1/orders", order_body(&customer), h)),
    )
    .await;
    for r in &responses {
        r.assert_status(201);
    }
    let ids: std::collections::HashSet<_> = responses.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 60);
}

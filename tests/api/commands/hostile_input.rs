//! Hostile input at the edge: oversized request ids, causation claimed by a client,
//! invisible formatting characters in free text, waits that could never end, and the
//! customer list kept from storefronts.

use std::time::{Duration, Instant};

use ordo_api::Role::{Admin, Analyst, Storefront, Support};
use serde_json::json;

use crate::helpers::{order_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_10_kb_request_id_is_refused_before_anything_is_recorded() {
    let app = spawn_app().await;
    let customer = json!({"email": "ada@example.com", "name": "Ada Lovelace"});
    for id in ["r".repeat(10 * 1024), "r".repeat(129), "not a token".into()] {
        let refused = app
            .post_with(
                Storefront,
                "/v1/customers",
                customer.clone(),
                &[("x-request-id", &id)],
            )
            .await;
        refused.assert_problem(400, "bad-header");
        assert!(refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("x-request-id"));
        let echoed = refused.header("x-request-id").unwrap();
        assert!(echoed.len() <= 128 && echoed != id, "{echoed}");
    }
    assert_eq!(app.event_count().await, 0);

    let longest = "r".repeat(128);
    app.post_with(
        Storefront,
        "/v1/customers",
        customer,
        &[("x-request-id", &longest)],
    )
    .await
    .assert_status(201);
}

#[tokio::test]
async fn causation_is_the_command_s_own_never_the_client_s_request_id() {
    let app = spawn_app().await;
    let claimed = uuid::Uuid::new_v4().to_string();
    let created = app
        .post_with(
            Storefront,
            "/v1/customers",
            json!({"email": "ada@example.com", "name": "Ada Lovelace"}),
            &[("x-request-id", &claimed)],
        )
        .await;
    created.assert_status(201);
    let history = app
        .get(Support, &format!("/v1/customers/{}/history", created.id()))
        .await;
    let meta = &history.body["items"][0]["metadata"];
    assert_eq!(meta["request_id"], json!(claimed));
    let causation = meta["causation_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(causation).is_ok(), "{causation}");
    assert_ne!(causation, claimed);
}

#[tokio::test]
async fn names_reasons_and_notes_refuse_bidi_overrides_and_zero_width_characters() {
    let app = spawn_app().await;
    let spoofed = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": "eve@example.com", "name": "Eve \u{202E}nimdA"}),
        )
        .await;
    spoofed.assert_problem(422, "validation");
    assert_eq!(spoofed.body["errors"][0]["field"], "name");

    let customer = app.register_customer().await;
    let note = app
        .post(
            Support,
            &format!("/v1/customers/{customer}/notes"),
            json!({"text": "refund\u{200B} approved"}),
        )
        .await;
    note.assert_problem(422, "validation");
    assert_eq!(note.body["errors"][0]["field"], "text");

    let order = app.place_order(&customer).await;
    let cancel = app
        .post(
            Storefront,
            &format!("/v1/orders/{order}/cancel"),
            json!({"reason": "\u{2066}customer request\u{2069}"}),
        )
        .await;
    cancel.assert_problem(422, "validation");
    assert_eq!(cancel.body["errors"][0]["field"], "reason");
}

#[tokio::test]
async fn a_min_position_no_event_has_is_a_400_at_once() {
    // A long wait, so that answering "at once" cannot be the wait running out.
    let app = spawn_app_with(|c| c.read_wait_secs = 30).await;
    let customer = app.register_customer().await;
    let order = app
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await;
    order.assert_status(201);
    let beyond = order.body["position"].as_i64().unwrap() + 1_000;

    let started = Instant::now();
    let refused = app
        .get(
            Storefront,
            &format!("/v1/orders/{}?min_position={beyond}", order.id()),
        )
        .await;
    refused.assert_problem(400, "bad-query");
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("min_position"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A position that was committed is waited for and read.
    app.get_fresh(Storefront, &format!("/v1/orders/{}", order.id()))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn storefronts_look_customers_up_by_email_but_cannot_list_them() {
    let app = spawn_app().await;
    app.post(
        Storefront,
        "/v1/customers",
        json!({"email": "grace@example.com", "name": "Grace Hopper"}),
    )
    .await
    .assert_status(201);

    for role in [Storefront, Analyst] {
        app.get(role, "/v1/customers")
            .await
            .assert_problem(403, "forbidden");
    }
    let found = app
        .get_fresh(Storefront, "/v1/customers?email=Grace@Example.com")
        .await;
    found.assert_status(200);
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
    for role in [Support, Admin] {
        let all = app.get_fresh(role, "/v1/customers").await;
        all.assert_status(200);
        assert_eq!(all.body["items"].as_array().unwrap().len(), 1);
    }
}

//! Every error status, as an RFC 9457 problem with `x-request-id`.

use std::time::Duration;

use ordo::{Application, ProcessRole};
use ordo_api::Role::Storefront;
use serde_json::json;

use crate::helpers::{read, spawn_app, spawn_app_with, start, Resp, TcpProxy};

async fn raw_post(
    app: &crate::helpers::TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Resp {
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(app.key(Storefront))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let resp = raw_post(
        &app,
        "/v1/customers",
        Some("application/json"),
        b"{\"email\": ".to_vec(),
    )
    .await;
    resp.assert_problem(400, "malformed-json");
    assert!(resp.header("x-request-id").is_some());
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_content_is_415() {
    let app = spawn_app().await;
    raw_post(&app, "/v1/customers", Some("text/plain"), b"{}".to_vec())
        .await
        .assert_problem(415, "unsupported-media-type");
    raw_post(
        &app,
        "/v1/customers",
        None,
        b"{\"email\":\"a@b.co\",\"name\":\"A\"}".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    // `application/json; charset=utf-8` and `+json` types are JSON.
    raw_post(
        &app,
        "/v1/customers",
        Some("application/json; charset=utf-8"),
        b"{\"email\":\"a@b.co\",\"name\":\"A\"}".to_vec(),
    )
    .await
    .assert_status(201);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let name = "x".repeat(70 * 1024);
    let body = serde_json::to_vec(&json!({"email": "a@b.co", "name": name})).unwrap();
    raw_post(&app, "/v1/customers", Some("application/json"), body)
        .await
        .assert_problem(413, "payload-too-large");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn invalid_fields_are_all_reported_with_422() {
    let app = spawn_app().await;
    let resp = app
        .post(
            Storefront,
            "/v1/orders",
            json!({
                "customer_id": "not-a-uuid",
                "currency": "EURO",
                "lines": [
                    {"sku": "OK-1", "name": "Mug", "quantity": 0, "unit_price": -5},
                    {"sku": "bad sku", "name": "", "quantity": 1, "unit_price": 100}
                ]
            }),
        )
        .await;
    resp.assert_problem(422, "validation");
    let fields: Vec<&str> = resp.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "customer_id",
            "currency",
            "lines[0].quantity",
            "lines[0].unit_price",
            "lines[1].sku",
            "lines[1].name"
        ]
    );
    assert!(resp.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())));

    let empty = app
        .post(
            Storefront,
            "/v1/orders",
            json!({"customer_id": uuid::Uuid::new_v4(), "currency": "EUR", "lines": []}),
        )
        .await;
    empty.assert_problem(422, "validation");
    app.post(Storefront, "/v1/customers", json!([1, 2]))
        .await
        .assert_problem(422, "validation");
    app.post(
        Storefront,
        "/v1/payments/00000000-0000-0000-0000-000000000001/capture",
        json!({"amount": 0}),
    )
    .await
    .assert_problem(422, "validation");
    app.post(
        Storefront,
        "/v1/orders/00000000-0000-0000-0000-000000000001/cancel",
        json!({}),
    )
    .await
    .assert_problem(422, "validation");
}

/// A field the body does not have is refused, at any depth, and named: a misspelt optional
/// field (`shiping_address`) was dropped in silence and the order placed without it. Nothing
/// is recorded.
#[tokio::test]
async fn a_field_the_body_does_not_have_is_422_naming_it_and_nothing_is_recorded() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let resp = app
        .post(
            Storefront,
            "/v1/orders",
            json!({
                "customer_id": customer,
                "currency": "EUR",
                "lines": [{"sku": "MUG-1", "name": "Mug", "quantity": 1, "unit_price": 100,
                           "discount": 10}],
                "shipping_address": {"line1": "1 Main St", "city": "Paris",
                                     "postal_code": "75001", "country": "FR", "state": "IDF"},
                "shiping_address": {"line1": "1 Main St"}
            }),
        )
        .await;
    resp.assert_problem(422, "validation");
    let errors = resp.body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "shiping_address",
            "lines[0].discount",
            "shipping_address.state"
        ],
        "{errors:#?}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("shipping_address"),
        "the message lists the fields there are: {errors:#?}"
    );
    let orders = app
        .get_fresh(Storefront, &format!("/v1/orders?customer_id={customer}"))
        .await;
    assert_eq!(orders.body["items"], json!([]));

    // A body that takes no fields, and a shipment's lines.
    let order = app.place_order(&customer).await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/confirm"),
        json!({"note": "rush"}),
    )
    .await
    .assert_problem(422, "validation");
    let ship = app
        .post(
            Storefront,
            &format!("/v1/orders/{order}/ship"),
            json!({"carrier": "DHL", "tracking_number": "1",
                   "lines": [{"sku": "SKU-1", "quantity": 1, "qty": 1}]}),
        )
        .await;
    ship.assert_problem(422, "validation");
    assert_eq!(ship.body["errors"][0]["field"], "lines[0].qty");
}

#[tokio::test]
async fn amounts_whose_total_overflows_are_422_not_a_wrapped_total() {
    let app = spawn_app().await;
    let customer = app.register_customer().await;
    let resp = app
        .post(
            Storefront,
            "/v1/orders",
            json!({"customer_id": customer, "currency": "EUR",
                   "lines": [{"sku": "BIG", "name": "Big", "quantity": 3, "unit_price": 500_000_000_000_000_i64}]}),
        )
        .await;
    resp.assert_problem(422, "validation");
    assert_eq!(resp.body["errors"][0]["field"], "lines[0]");
}

#[tokio::test]
async fn unknown_ids_and_routes_are_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    app.post(
        Storefront,
        &format!("/v1/orders/{unknown}/confirm"),
        json!({}),
    )
    .await
    .assert_problem(404, "not-found");
    app.post(
        Storefront,
        &format!("/v1/payments/{unknown}/void"),
        json!({}),
    )
    .await
    .assert_problem(404, "not-found");
    app.post(
        ordo_api::Role::Support,
        &format!("/v1/customers/{unknown}/notes"),
        json!({"text": "hi"}),
    )
    .await
    .assert_problem(404, "not-found");
    app.get(Storefront, &format!("/v1/orders/{unknown}"))
        .await
        .assert_problem(404, "not-found");
    app.get(Storefront, "/v1/orders/not-a-uuid")
        .await
        .assert_problem(404, "not-found");
    app.get(Storefront, "/v1/nothing-here")
        .await
        .assert_problem(404, "not-found");
    let resp = read(
        app.client
            .delete(app.url("/v1/orders"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    resp.assert_problem(405, "method-not-allowed");
}

/// Keys belong to servers, not browsers: a CORS preflight is refused like any other method
/// the route does not take, and no answer grants a foreign origin access.
#[tokio::test]
async fn a_cors_preflight_is_refused_and_no_origin_is_granted_access() {
    let app = spawn_app().await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/orders"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let headers = preflight.headers().clone();
    read(preflight)
        .await
        .assert_problem(405, "method-not-allowed");
    let listed = app
        .client
        .get(app.url("/v1/orders"))
        .bearer_auth(app.key(Storefront))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    for headers in [headers, listed.headers().clone()] {
        assert!(
            headers
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-")),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_an_incoming_one_is_kept() {
    let app = spawn_app().await;
    let resp = read(
        app.client
            .get(app.url("/healthz"))
            .header("x-request-id", "req-abc-123")
            .send()
            .await
            .unwrap(),
    )
    .await;
    resp.assert_status(200);
    assert_eq!(resp.header("x-request-id"), Some("req-abc-123"));
    let fresh = read(
        app.client
            .get(app.url("/v1/orders/x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(fresh
        .header("x-request-id")
        .is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn an_unreachable_store_is_503_with_retry_after_and_recovers() {
    // The application reaches PostgreSQL only through a proxy the test can cut.
    let direct = crate::helpers::spawn_app().await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let proxied_url = direct
        .database_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let mut config = ordo::Config::defaults();
    config.database_url = proxied_url.clone().into();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.db_acquire_timeout_secs = 1;
    // Off the shared NATS server: the relay and the workers would use the default streams.
    config.roles = vec![
        ProcessRole::Api,
        ProcessRole::Projector,
        ProcessRole::ProcessManager,
    ];
    let pool = ordo_commands::db::pool(
        &proxied_url,
        &ordo_commands::db::PoolSettings {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(1),
        },
    )
    .unwrap();
    let app = start(
        Application::with_pool(&config, pool).await.unwrap(),
        direct.pool.clone(),
        String::new(),
    )
    .await;
    let customer = app.register_customer().await;

    proxy.cut();
    let resp = app
        .post(
            Storefront,
            "/v1/orders",
            crate::helpers::order_body(&customer),
        )
        .await;
    resp.assert_problem(503, "unavailable");
    assert_eq!(resp.header("retry-after"), Some("2"));
    let ready = read(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    ready.assert_status(503);
    assert_eq!(ready.body["status"], "not_ready");
    assert_eq!(ready.body["checks"]["postgres"]["status"], "down");

    proxy.restore();
    let mut placed = None;
    for _ in 0..50 {
        let resp = app
            .post(
                Storefront,
                "/v1/orders",
                crate::helpers::order_body(&customer),
            )
            .await;
        if resp.status == 201 {
            placed = Some(resp);
            break;
        }
        assert_eq!(
            resp.status, 503,
            "only 503 while reconnecting: {:?}",
            resp.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        placed.is_some(),
        "commands work again once the store is back"
    );
    drop(app);
    drop(direct);
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = spawn_app_with(|c| c.body_limit = 100).await;
    let body = serde_json::to_vec(&json!({"email": "a@b.co", "name": "y".repeat(200)})).unwrap();
    raw_post(&app, "/v1/customers", Some("application/json"), body)
        .await
        .assert_problem(413, "payload-too-large");
}

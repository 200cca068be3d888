//! Webhooks only to public addresses unless `ORDO_WEBHOOK_ALLOW_PRIVATE=true`: refused at
//! registration, and at connect time (a name that resolves to a private address later, or
//! an endpoint stored while private receivers were allowed, gets no request). Every
//! address used here is loopback: the filter's ranges are unit-tested in `egress.rs`.

use ordo::ProcessRole;
use ordo_api::Role::Admin;
use ordo_workers::integration;
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::setup;
use crate::workers::webhooks::{history, quick_pool, register, Receiver};

async fn strict_app() -> TestApp {
    spawn_app_with(|c| {
        c.roles = vec![ProcessRole::Api];
        c.webhook_allow_private = false;
    })
    .await
}

#[tokio::test]
async fn webhooks_to_loopback_by_address_or_by_name_are_refused_at_registration() {
    let app = strict_app().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
    ] {
        let refused = app
            .post(
                Admin,
                "/v1/webhooks",
                json!({"url": url, "event_types": ["*"]}),
            )
            .await;
        refused.assert_problem(422, "validation");
        assert_eq!(refused.body["errors"][0]["field"], "url", "{url}");
        let message = refused.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("not a public address"), "{url}: {message}");
    }
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM integration.endpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(endpoints, 0);
}

#[tokio::test]
async fn with_private_receivers_allowed_loopback_webhooks_register() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    register(&app, "http://127.0.0.1:9/hook", json!(["*"])).await;
    register(&app, "http://localhost:9/hook", json!(["*"])).await;
}

#[tokio::test]
async fn the_integration_worker_refuses_to_connect_to_a_loopback_receiver() {
    // Registered while allowed; delivered by a worker whose client is not: the check at
    // connect time holds whatever the registration saw (DNS rebinding).
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Receiver::start(|_| 200).await;
    let by_name = hook.url.replace("127.0.0.1", "localhost");
    let (literal, _) = register(&app, &hook.url, json!(["order.placed"])).await;
    let (named, _) = register(&app, &by_name, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let strict = integration::client_with(None, false).unwrap();
    let pool = quick_pool(&app, Some(strict), 1);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.deliveries",
        2,
    )
    .await;

    assert!(hook.received().is_empty(), "{:?}", hook.received());
    for endpoint in [literal, named] {
        let (delivery, attempts) = history(&app, &endpoint).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0]["ok"], false);
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(error.contains("not a public address"), "{error}");
    }
    s.cleanup().await;
}

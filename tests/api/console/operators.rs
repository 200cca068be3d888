//! The console's operator pages in a real browser: an admin redrives a dead letter; and the
//! screenshots of every page for the docs (`scripts/screenshots`, an ignored test).

use std::time::{Duration, Instant};

use ordo::ProcessRole;
use ordo_api::Role::{Admin, Storefront};
use ordo_workers::{Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;

use crate::browser::{Browser, DEADLINE};
use crate::console::pages::refunded_order;
use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::NATS;

/// The API on a NATS stream of the test's own, a relay and an analytics worker on it.
async fn with_workers(roles: Vec<ProcessRole>) -> (TestApp, Relay, WorkerRunner, WorkerConfig) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ORDO_TEST_{id}"), format!("t{id}.events"));
    let (s2, p2) = (stream.clone(), prefix.clone());
    let app = spawn_app_with(move |c| {
        c.roles = roles;
        c.nats_stream = s2;
        c.nats_subject_prefix = p2;
    })
    .await;
    let relay_config = RelayConfig {
        stream: stream.clone(),
        subject_prefix: prefix.clone(),
        ..RelayConfig::new(NATS)
    };
    let relay = Relay::connect(app.pool.clone(), relay_config)
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    let worker_config = WorkerConfig {
        stream,
        subject_prefix: prefix,
        dlq_stream: format!("ORDO_TEST_DLQ_{id}"),
        dlq_prefix: format!("t{id}.dlq"),
        max_deliver: 2,
        backoff: vec![Duration::from_millis(50)],
        ..WorkerConfig::new(NATS)
    };
    let runner = WorkerRunner::connect(app.pool.clone(), Worker::Analytics, worker_config.clone())
        .await
        .unwrap();
    (app, relay, runner, worker_config)
}

async fn cleanup(config: &WorkerConfig) {
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    for stream in [
        config.stream.clone(),
        config.dlq_stream.clone(),
        config.advisory_stream(),
    ] {
        let _ = js.delete_stream(&stream).await;
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

async fn work_until(app: &TestApp, runner: &WorkerRunner, sql: &str, expected: i64) {
    let deadline = Instant::now() + DEADLINE;
    while count(app, sql).await != expected {
        assert!(Instant::now() < deadline, "never {expected}: {sql}");
        runner.step(50, Duration::from_millis(200)).await.unwrap();
    }
}

#[tokio::test]
async fn an_admin_redrives_a_dead_letter_from_the_workers_page() {
    let (app, relay, runner, config) = with_workers(vec![ProcessRole::Api]).await;
    sqlx::query(
        "ALTER TABLE analytics.order_stages ADD CONSTRAINT no_placed CHECK (stage <> 'placed')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let customer = app.register_customer().await;
    app.place_order(&customer).await;
    crate::nats::relay_all(&app, &relay, &config.stream).await;
    work_until(
        &app,
        &runner,
        "SELECT count(*) FROM workers.dead_letters",
        1,
    )
    .await;

    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Admin).await;
    browser.goto("/console/workers").await;
    let letter = browser.wait_for_text("article.letter", "no_placed").await;
    assert!(letter.contains("order.placed"), "{letter}");
    assert!(browser.text("#workers table").await.contains("analytics"));

    sqlx::query("ALTER TABLE analytics.order_stages DROP CONSTRAINT no_placed")
        .execute(&app.pool)
        .await
        .unwrap();
    browser.click("article.letter form button").await;
    browser.wait_for_text("article.letter", "redriven").await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('article.letter form').length")
            .await,
        json!(0)
    );
    work_until(
        &app,
        &runner,
        "SELECT count(*) FROM analytics.order_stages WHERE stage = 'placed'",
        1,
    )
    .await;
    browser.close().await;
    cleanup(&config).await;
}

/// `scripts/screenshots`: every console page with sample data, as PNGs in
/// `$ORDO_SCREENSHOTS_DIR` (default `target/screenshots`).
#[tokio::test]
#[ignore = "writes screenshots for the docs; run by scripts/screenshots"]
async fn screenshots_of_every_console_page() {
    let roles = vec![
        ProcessRole::Api,
        ProcessRole::Projector,
        ProcessRole::ProcessManager,
    ];
    let (app, relay, runner, config) = with_workers(roles).await;
    let ada = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": "ada@example.com", "name": "Ada Lovelace"}),
        )
        .await
        .id();
    let (order, _) = refunded_order(&app, &ada).await;
    for _ in 0..4 {
        app.confirmed_order().await;
    }
    let cancelled = app.place_order(&ada).await;
    app.post(
        Storefront,
        &format!("/v1/orders/{cancelled}/cancel"),
        json!({"reason": "changed mind"}),
    )
    .await;
    app.post(
        ordo_api::Role::Support,
        &format!("/v1/customers/{ada}/notes"),
        json!({"text": "Called about the chipped mug; refunded 5 EUR."}),
    )
    .await;
    crate::nats::relay_all(&app, &relay, &config.stream).await;
    let events = count(&app, "SELECT count(*) FROM event_store.events").await;
    let deadline = Instant::now() + DEADLINE;
    while count(&app, "SELECT count(*) FROM analytics.processed").await < events {
        if Instant::now() > deadline {
            break;
        }
        runner.step(100, Duration::from_millis(200)).await.unwrap();
    }

    let dir = std::env::var("ORDO_SCREENSHOTS_DIR").unwrap_or_else(|_| "target/screenshots".into());
    std::fs::create_dir_all(&dir).unwrap();
    let browser = Browser::start(&app).await;
    browser.sign_in(&app, Admin).await;
    let pages = [
        ("search", "/console".to_owned()),
        ("order-timeline", format!("/console/orders/{order}")),
        ("customer", format!("/console/customers/{ada}")),
        ("projections", "/console/projections".into()),
        ("workers", "/console/workers".into()),
        ("webhooks", "/console/webhooks".into()),
        ("analytics", "/console/analytics?granularity=hour".into()),
        ("keys", "/console/keys".into()),
        ("sessions", "/console/sessions".into()),
    ];
    for (name, path) in &pages {
        browser.goto(path).await;
        browser.find("main h1").await;
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("/console/orders/{order}")).await;
    browser.find("main h1").await;
    std::fs::write(
        format!("{dir}/order-timeline-390.png"),
        browser.client.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.close().await;
    cleanup(&config).await;
}

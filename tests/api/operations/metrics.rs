//! `GET /metrics`: every family the dashboards rely on, after a short scenario that touches
//! each (commands, projections, the relay, a worker, a dead letter). The recorder is global
//! to the test process and other tests run beside this one, so values are only compared
//! with themselves: a series exists, a counter grew.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo::ProcessRole;
use ordo_api::Role::Storefront;
use ordo_workers::{Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::NATS;

/// The scrape as text (no API key: Prometheus has none).
pub(crate) async fn scrape(app: &TestApp) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    resp.text().await.unwrap()
}

/// The value of the first sample of `family` whose labels include every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[track_caller]
pub(crate) fn has(text: &str, family: &str, labels: &[&str]) -> f64 {
    sample(text, family, labels)
        .unwrap_or_else(|| panic!("no {family} with {labels:?} in the scrape:\n{text}"))
}

#[tokio::test]
async fn metrics_expose_every_family_after_a_short_scenario() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ORDO_TEST_{id}"), format!("t{id}.events"));
    let app = {
        let (stream, prefix) = (stream.clone(), prefix.clone());
        spawn_app_with(move |c| {
            c.nats_stream = stream;
            c.nats_subject_prefix = prefix;
        })
        .await
    };
    let before = scrape(&app).await;
    let confirms_before = sample(
        &before,
        "http_requests_total",
        &[r#"route="/v1/orders/{id}/confirm""#, r#"status="200""#],
    )
    .unwrap_or(0.0);

    // Commands: accepted ones and a rejected one.
    let order = app.confirmed_order().await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/deliver"),
        json!({}),
    )
    .await
    .assert_status(409);

    // The relay on this test's stream, then a worker, then a message no worker can read.
    let relay = Relay::connect(
        app.pool.clone(),
        RelayConfig {
            stream: stream.clone(),
            subject_prefix: prefix.clone(),
            ..RelayConfig::new(NATS)
        },
    )
    .await
    .unwrap();
    relay.ensure_stream().await.unwrap();
    crate::nats::relay_all(&app, &relay, &stream).await;
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
    js.publish(format!("{prefix}.order.placed"), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let worker_config = WorkerConfig {
        stream: stream.clone(),
        subject_prefix: prefix.clone(),
        dlq_stream: format!("ORDO_TEST_DLQ_{id}"),
        dlq_prefix: format!("t{id}.dlq"),
        max_deliver: 2,
        backoff: vec![Duration::from_millis(50)],
        ..WorkerConfig::new(NATS)
    };
    let runner = WorkerRunner::connect(app.pool.clone(), Worker::Notification, worker_config)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM workers.dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM notification.processed")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if dead == 1 && handled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker: {handled} handled, {dead} dead"
        );
        runner.step(50, Duration::from_millis(100)).await.unwrap();
    }

    let text = scrape(&app).await;
    let confirm = [
        r#"method="POST""#,
        r#"route="/v1/orders/{id}/confirm""#,
        r#"status="200""#,
    ];
    assert!(has(&text, "http_requests_total", &confirm) >= confirms_before + 1.0);
    has(&text, "http_request_duration_seconds_bucket", &confirm);
    has(&text, "http_request_duration_seconds_count", &confirm);
    assert!(
        !text.contains(&format!("/v1/orders/{order}")),
        "a raw path became a label"
    );
    let place = r#"command="place_order""#;
    has(
        &text,
        "ordo_commands_total",
        &[place, r#"outcome="accepted""#],
    );
    has(
        &text,
        "ordo_commands_total",
        &[r#"command="deliver_order""#, r#"outcome="rejected""#],
    );
    has(&text, "ordo_command_duration_seconds_bucket", &[place]);
    has(
        &text,
        "ordo_events_appended_total",
        &[r#"aggregate="order""#, r#"event_type="order.placed""#],
    );
    for projection in ["orders", "payments", "customers"] {
        let label = format!(r#"projection="{projection}""#);
        has(&text, "ordo_projection_position", &[&label]);
        has(&text, "ordo_projection_lag_events", &[&label]);
        has(&text, "ordo_projection_lag_seconds", &[&label]);
    }
    assert!(has(&text, "ordo_relay_published_total", &[]) >= 3.0);
    has(&text, "ordo_relay_lag_events", &[]);
    let worker = r#"worker="notification""#;
    assert!(has(&text, "ordo_worker_processed_total", &[worker]) >= 1.0);
    assert!(has(&text, "ordo_worker_failed_total", &[worker]) >= 1.0);
    assert!(has(&text, "ordo_worker_dead_lettered_total", &[worker]) >= 1.0);
    has(
        &text,
        "ordo_worker_handler_duration_seconds_bucket",
        &[worker],
    );
    assert!(has(&text, "ordo_append_batch_size_count", &[]) >= 1.0);
    let main = r#"pool="main""#;
    has(
        &text,
        "ordo_db_pool_connections",
        &[main, r#"state="idle""#],
    );
    has(
        &text,
        "ordo_db_pool_connections",
        &[main, r#"state="in_use""#],
    );
    assert!(has(&text, "ordo_db_pool_max_connections", &[main]) >= 1.0);
    has(&text, "ordo_rate_limited_total", &[]);

    let _ = js.delete_stream(&stream).await;
    let _ = js.delete_stream(format!("ORDO_TEST_DLQ_{id}")).await;
    let _ = js.delete_stream(format!("{stream}_ADVISORIES")).await;
}

#[tokio::test]
async fn a_process_without_the_api_role_still_serves_health_and_metrics() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Projector]).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // The runner exports its lag once it has stepped: scrape until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&app).await;
        let lag = sample(
            &text,
            "ordo_projection_lag_events",
            &[r#"projection="orders""#],
        );
        if lag.is_some() || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    has(
        &text,
        "ordo_projection_lag_events",
        &[r#"projection="orders""#],
    );
    has(&text, "ordo_db_pool_max_connections", &[r#"pool="main""#]);
    // The API itself is not served here.
    app.post(Storefront, "/v1/customers", json!({}))
        .await
        .assert_problem(404, "not-found");
}

/// A scrape reads no database: the components keep their gauges as they go. With every
/// connection of the process's pool held elsewhere, a scrape still answers at once, with
/// the projection gauges the runners set. (It used to run a `count(*)` over each reader's
/// backlog and wait up to 2 s for a connection.)
#[tokio::test]
async fn a_scrape_answers_with_the_pool_exhausted_because_it_queries_nothing() {
    let app = spawn_app_with(|c| {
        c.roles = vec![ProcessRole::Api, ProcessRole::Projector];
        // A scrape that asked for a connection would wait this long for it.
        c.db_acquire_timeout_secs = 60;
    })
    .await;
    let customer = app.register_customer().await;
    app.get_fresh(
        ordo_api::Role::Support,
        &format!("/v1/customers/{customer}"),
    )
    .await
    .assert_status(200);
    let text = scrape(&app).await;
    has(
        &text,
        "ordo_projection_position",
        &[r#"projection="customers""#],
    );

    // Take every connection the pool will give (the runners' listeners hold some).
    let mut held = Vec::new();
    while let Ok(Ok(conn)) =
        tokio::time::timeout(Duration::from_millis(500), app.pool.acquire()).await
    {
        held.push(conn);
    }
    assert_eq!(app.pool.num_idle(), 0, "the pool is exhausted");

    // A scrape that needed a connection could not answer before its own 2 s sampling
    // timeout (the old handler's bound); one that needs none answers in milliseconds, so
    // 1.5 s leaves a wide margin on a loaded machine.
    let scraped = tokio::time::timeout(Duration::from_millis(1500), scrape(&app))
        .await
        .expect("a scrape does not wait for a database connection");
    for projection in ["orders", "payments", "customers"] {
        let label = format!(r#"projection="{projection}""#);
        has(&scraped, "ordo_projection_lag_events", &[&label]);
    }
    has(&scraped, "ordo_db_pool_connections", &[r#"state="in_use""#]);
    drop(held);
}

/// `ORDO_METRICS_ADDR`: `/metrics` on a listener of its own, and not on the API's address.
#[tokio::test]
async fn with_a_metrics_address_metrics_listen_there_and_not_on_the_api_address() {
    let app = spawn_app_with(|c| {
        c.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics = app.metrics_base.clone().expect("a metrics listener");
    assert_ne!(metrics, app.base);

    let own = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own
        .text()
        .await
        .unwrap()
        .contains("ordo_db_pool_max_connections"));

    let on_api = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        on_api.status(),
        404,
        "the API address does not serve /metrics"
    );
    // The API itself still answers on its address, and only /metrics on the other.
    app.get(ordo_api::Role::Support, "/v1/projections")
        .await
        .assert_status(200);
    let elsewhere = app
        .client
        .get(format!("{metrics}/v1/projections"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}

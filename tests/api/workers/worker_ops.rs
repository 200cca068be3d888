//! Operating the workers over HTTP: status, dead letters, redrive after a fix, replay.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Analyst, Storefront};
use ordo_workers::{Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::workers::worker_status;

const NATS: &str = "nats://127.0.0.1:4222";

async fn step_until(runner: &WorkerRunner, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "condition not reached");
        runner.step(50, Duration::from_millis(200)).await.unwrap();
    }
}

#[tokio::test]
async fn a_dead_letter_is_seen_redriven_after_the_fix_and_handled_once_and_replay_changes_nothing()
{
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ORDO_TEST_{id}"), format!("t{id}.events"));
    let (s2, p2) = (stream.clone(), prefix.clone());
    let app = spawn_app_with(move |c| {
        c.roles = vec![ProcessRole::Api];
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
        stream: stream.clone(),
        subject_prefix: prefix.clone(),
        dlq_stream: format!("ORDO_TEST_DLQ_{id}"),
        dlq_prefix: format!("t{id}.dlq"),
        max_deliver: 2,
        backoff: vec![Duration::from_millis(50)],
        ..WorkerConfig::new(NATS)
    };
    let runner = WorkerRunner::connect(app.pool.clone(), Worker::Analytics, worker_config.clone())
        .await
        .unwrap();

    sqlx::query(
        "ALTER TABLE analytics.order_stages ADD CONSTRAINT no_placed CHECK (stage <> 'placed')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let customer = app.register_customer().await;
    app.place_order(&customer).await;
    crate::nats::relay_all(&app, &relay, &stream).await;
    step_until(&runner, async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers.dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == 1
    })
    .await;

    let analytics = worker_status(&app, "analytics").await;
    assert_eq!(analytics["dead_letters"], 1);
    assert!(analytics["last_error"]
        .as_str()
        .unwrap()
        .contains("no_placed"));
    assert!(analytics["pending"].is_u64());
    app.get(Storefront, "/v1/workers")
        .await
        .assert_problem(403, "forbidden");

    let letters = app.get(Admin, "/v1/dead-letters?worker=analytics").await;
    let letter = letters.body["items"][0].clone();
    assert_eq!(letter["attempts"], 2);
    assert!(letter["subject"]
        .as_str()
        .unwrap()
        .ends_with(".order.placed"));

    // Fix, then redrive: handled once.
    sqlx::query("ALTER TABLE analytics.order_stages DROP CONSTRAINT no_placed")
        .execute(&app.pool)
        .await
        .unwrap();
    let letter_id = letter["id"].as_str().unwrap();
    app.post(
        Admin,
        &format!("/v1/dead-letters/{letter_id}/redrive"),
        json!({}),
    )
    .await
    .assert_status(202);
    app.post(
        Admin,
        &format!("/v1/dead-letters/{letter_id}/redrive"),
        json!({}),
    )
    .await
    .assert_problem(404, "not-found");
    step_until(&runner, async || {
        app.get(Analyst, "/v1/analytics/funnel").await.body["placed"] == 1
    })
    .await;

    // Replay from the first event: everything is delivered again, nothing counted twice.
    let replay = app
        .post(
            Admin,
            "/v1/workers/analytics/replay",
            json!({"from_position": 1}),
        )
        .await;
    replay.assert_status(202);
    let events = app.event_count().await as usize;
    crate::nats::redeliver_all(&runner, events).await;
    let funnel = app.get(Analyst, "/v1/analytics/funnel").await;
    assert_eq!(funnel.body["placed"], 1);
    let sales = app.get(Analyst, "/v1/analytics/sales").await;
    assert_eq!(sales.body["items"][0]["orders"], 1);

    app.post(
        Admin,
        "/v1/workers/nobody/replay",
        json!({"from_position": 1}),
    )
    .await
    .assert_problem(404, "not-found");
    app.post(Admin, "/v1/workers/analytics/replay", json!({}))
        .await
        .assert_problem(422, "validation");
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
    let _ = js.delete_stream(&stream).await;
    let _ = js.delete_stream(&worker_config.dlq_stream).await;
    let _ = js.delete_stream(worker_config.advisory_stream()).await;
}

#[tokio::test]
async fn redriving_all_of_a_workers_letters_goes_in_bounded_steps_with_what_remains() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let s = crate::nats::setup(&app).await;
    let subject = format!("{}.order.placed", s.relay_config.subject_prefix);
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO workers.dead_letters (id, worker, event_id, subject, stream_sequence, attempts, error, body, headers)
             VALUES ($1, 'analytics', $2, $3, 0, 3, 'broken', '{}', '{}')",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::new_v4())
        .bind(&subject)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let redrive = |body: serde_json::Value| app.post(Admin, "/v1/dead-letters/redrive", body);
    let first = redrive(json!({"worker": "analytics", "limit": 2})).await;
    first.assert_status(202);
    assert_eq!(
        (
            first.body["redriven"].clone(),
            first.body["remaining"].clone()
        ),
        (json!(2), json!(1))
    );
    let second = redrive(json!({"worker": "analytics", "limit": 2})).await;
    assert_eq!(
        (
            second.body["redriven"].clone(),
            second.body["remaining"].clone()
        ),
        (json!(1), json!(0))
    );
    redrive(json!({"worker": "analytics", "limit": 0}))
        .await
        .assert_problem(422, "validation");
    redrive(json!({"worker": "analytics", "limit": 1001}))
        .await
        .assert_problem(422, "validation");
    s.cleanup().await;
}

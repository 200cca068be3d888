//! Operating the workers over HTTP: status, dead letters, redrive after a fix, replay.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Analyst, Storefront};
use ordo_workers::{Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;

use crate::helpers::{reads_of, spawn_app_with};
use crate::workers::{rows_read, rows_read_by, worker_status};

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

#[tokio::test]
async fn the_workers_status_and_the_dead_letters_read_what_waits_and_the_newest_not_every_letter_kept(
) {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    // 12,000 dead letters, 4,000 per worker, all redriven long ago but four per worker; the
    // newest of each alone at its time, then four at a time sharing theirs, so that the
    // order between those is the ids'.
    sqlx::query(
        "INSERT INTO workers.dead_letters (id, worker, event_id, subject, stream_sequence,
                attempts, error, body, created_at, redriven_at)
         SELECT gen_random_uuid(), w, gen_random_uuid(), 'ordo.events.order.placed', g, 3,
                w || ' failed ' || g, '{}', now() - make_interval(secs => (g + 2) / 4),
                CASE WHEN g % 1000 <> 7 THEN now() END
           FROM generate_series(1, 4000) g,
                unnest(ARRAY['notification', 'analytics', 'integration']) w",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE workers.dead_letters")
        .execute(&app.pool)
        .await
        .unwrap();

    // Each worker: its four waiting letters, and its newest letter's error.
    for worker in Worker::ALL.map(Worker::name) {
        let status = worker_status(&app, worker).await;
        assert_eq!(status["dead_letters"], 4, "{status}");
        assert_eq!(
            status["last_error"],
            format!("{worker} failed 1"),
            "{status}"
        );
    }
    // Every worker's letters together: the newest 500, as a sort of the whole table orders
    // them.
    let listed = app.get(Admin, "/v1/dead-letters").await;
    listed.assert_status(200);
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    let sorted: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM workers.dead_letters ORDER BY created_at DESC, id DESC LIMIT 500",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ids, sorted);

    // What they read: never a scan of the table ...
    let s = crate::nats::setup(&app).await;
    let admin = ordo_workers::ops::WorkersAdmin::new(s.worker_config.clone());
    let ((workers, letters), reads) = reads_of(&app, "workers.dead_letters", async |one| {
        let workers = admin.status(one).await.unwrap();
        (workers, admin.dead_letters(one, None).await.unwrap())
    })
    .await;
    assert_eq!((workers.len(), letters.items.len()), (3, 500));
    assert_eq!(
        reads.scanned, 0,
        "the workers' status or the dead letters scanned the table"
    );
    // ... but a few rows per worker for the status and about 500 per worker for the list;
    // grouping or sorting the whole table read all 12,000.
    let names = Worker::ALL.map(Worker::name);
    let status_plan: serde_json::Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        ordo_workers::ops::LETTERS_BY_WORKER
    ))
    .bind(names)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let read = rows_read(&status_plan[0]["Plan"], "dead_letters");
    assert!(
        read <= 30.0,
        "the workers' status read {read} dead letters of 12,000: {status_plan}"
    );
    let (read, list_plan) = rows_read_by(
        &app.pool,
        ordo_workers::ops::NEWEST_DEAD_LETTERS.as_str(),
        "dead_letters",
    )
    .await;
    assert!(
        read <= 1_600.0,
        "the newest 500 dead letters read {read} of 12,000: {list_plan}"
    );
    s.cleanup().await;
}

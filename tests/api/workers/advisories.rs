//! A message JetStream gave up on without the worker settling it (the worker crashed, or its
//! handler outlived the ack wait) still becomes a dead letter: the max-deliveries advisory is
//! captured in a stream, and the worker dead-letters the message it names, once, so that a
//! redrive handles the event.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Analyst};
use ordo_workers::{AdvisoryOutcome, MaxDeliveriesAdvisory, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::{setup, work_until};

/// Pull the one waiting message on the worker's own durable consumer and drop it unsettled,
/// as a worker that crashed would, until JetStream gives up on it: its max-deliveries
/// advisory is captured. Returns the message's event id and stream sequence (the stream's
/// last message). Every delivery seen must be of that message and at most the `last`th. A
/// delivery may be missed by a fetch that expired while it was on its way (a loaded
/// machine), the last one too: JetStream counts it as delivered all the same, so the
/// captured advisory, not the last delivery, says when to stop.
async fn receive_and_drop_until(
    consumer: &PullConsumer,
    config: &WorkerConfig,
    js: &async_nats::jetstream::Context,
    last: u64,
) -> (Uuid, u64) {
    let mut events = js.get_stream(&config.stream).await.unwrap();
    let sequence = events.info().await.unwrap().state.last_sequence;
    let message = events.get_raw_message(sequence).await.unwrap();
    let id = message.headers.get("ce-id").unwrap().as_str().to_owned();
    let this = (Uuid::parse_str(&id).unwrap(), sequence);
    let mut advisories = js.get_stream(config.advisory_stream()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while advisories.info().await.unwrap().state.messages == 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        if let Some(message) = batch.next().await {
            let message = message.unwrap();
            let info = message.info().unwrap();
            let id = message.headers.as_ref().unwrap().get("ce-id").unwrap();
            assert_eq!(
                (Uuid::parse_str(id.as_str()).unwrap(), info.stream_sequence),
                this,
                "another message was delivered"
            );
            assert!(
                info.delivered as u64 <= last,
                "delivered more than {last} times"
            );
        }
        assert!(
            Instant::now() < deadline,
            "JetStream did not give up on the message"
        );
    }
    this
}

async fn wait_for(app: &TestApp, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap();
        if n == expected {
            return;
        }
        assert!(n < expected, "{sql}: {n}, more than {expected}");
        assert!(Instant::now() < deadline, "{sql}: {n} of {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_message_never_settled_becomes_one_dead_letter_from_the_advisory_and_redrives_once() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let s = setup(&app).await;
    let config = WorkerConfig {
        max_deliver: 2,
        ack_wait: Duration::from_secs(1),
        ..s.worker_config.clone()
    };
    let runner = WorkerRunner::connect(app.pool.clone(), Worker::Analytics, config.clone())
        .await
        .unwrap();
    let customer = app.register_customer().await;
    s.publish_all(&app).await;
    work_until(&runner, &app, "SELECT count(*) FROM analytics.processed", 1).await;

    // The order's message is received twice and never settled: JetStream gives up on it.
    app.place_order(&customer).await;
    s.publish_all(&app).await;
    let consumer: PullConsumer =
        s.js.get_stream(&config.stream)
            .await
            .unwrap()
            .get_consumer(Worker::Analytics.name())
            .await
            .unwrap();
    let (event_id, sequence) = receive_and_drop_until(&consumer, &config, &s.js, 2).await;

    // The worker, running as in production, hears of it only through the advisory.
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(runner.run(stopped));
    wait_for(&app, "SELECT count(*) FROM workers.dead_letters", 1).await;

    let letters = app.get(Admin, "/v1/dead-letters?worker=analytics").await;
    letters.assert_status(200);
    let items = letters.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let letter = &items[0];
    assert_eq!(letter["event_id"], json!(event_id));
    assert_eq!(letter["stream_sequence"], json!(sequence));
    assert_eq!(letter["attempts"], 2);
    assert_eq!(
        letter["error"],
        "not settled after 2 deliveries (max deliveries reached)"
    );
    assert!(letter["subject"]
        .as_str()
        .unwrap()
        .ends_with(".order.placed"));
    let dlq = s.js.get_stream(&config.dlq_stream).await.unwrap();
    let dead = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(
        dead.subject.as_str(),
        format!("{}.analytics", config.dlq_prefix)
    );
    assert_eq!(
        dead.headers.get("ce-id").unwrap().as_str(),
        event_id.to_string()
    );
    assert_eq!(
        app.get(Analyst, "/v1/analytics/funnel").await.body["placed"],
        0,
        "the event was not handled"
    );

    // What nats-server really sent, as captured.
    let captured = s.js.get_stream(config.advisory_stream()).await.unwrap();
    let raw = captured
        .get_last_raw_message_by_subject(&config.max_deliveries_subject("analytics"))
        .await
        .unwrap();
    let advisory: MaxDeliveriesAdvisory = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(
        (
            advisory.stream.as_str(),
            advisory.consumer.as_str(),
            advisory.stream_seq,
            advisory.deliveries
        ),
        (config.stream.as_str(), "analytics", sequence, 2),
        "{}",
        String::from_utf8_lossy(&raw.payload)
    );

    // The advisory was acknowledged once the dead letter was recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut advisories: PullConsumer = captured.get_consumer("analytics").await.unwrap();
        let info = advisories.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the advisory was not acked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Handling the same advisory again (a redelivery, a second process) adds nothing.
    let again = WorkerRunner::connect(app.pool.clone(), Worker::Analytics, config.clone())
        .await
        .unwrap();
    assert_eq!(
        again.handle_advisory(&raw.payload).await.unwrap(),
        AdvisoryOutcome::AlreadySettled
    );
    assert_eq!(
        again
            .handle_advisory(b"{\"not\": \"an advisory\"}")
            .await
            .unwrap(),
        AdvisoryOutcome::Ignored
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM workers.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(dlq.clone().info().await.unwrap().state.messages, 1);

    // A redrive handles the event, once.
    let id = letter["id"].as_str().unwrap();
    app.post(Admin, &format!("/v1/dead-letters/{id}/redrive"), json!({}))
        .await
        .assert_status(202);
    wait_for(
        &app,
        &format!("SELECT count(*) FROM analytics.processed WHERE event_id = '{event_id}'"),
        1,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get(Analyst, "/v1/analytics/funnel").await.body["placed"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the redriven event was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the redriven message is acked nothing is left to deliver, and it was counted once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = consumer.clone().info().await.unwrap().clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the redriven message was not acked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sales = app.get(Analyst, "/v1/analytics/sales").await;
    assert_eq!(sales.body["items"][0]["orders"], 1);
    let letters: Vec<(Option<chrono::DateTime<chrono::Utc>>,)> =
        sqlx::query_as("SELECT redriven_at FROM workers.dead_letters")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 1, "the redrive made no new dead letter");
    assert!(letters[0].0.is_some());

    stop.send(true).unwrap();
    running.await.unwrap();
    s.cleanup().await;
}

//! Workers on real JetStream: the analytics worker through the relay, once in effect even
//! when everything is delivered again; failures redelivered with backoff, then dead-lettered
//! while the other messages go on. Streams, prefixes and consumers are the test's own.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use ordo::ProcessRole;
use ordo_api::Role::{Analyst, Storefront};
use ordo_workers::{Relay, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::nats::{setup, work_until};

#[tokio::test]
async fn analytics_counts_sales_and_the_funnel_once_even_when_everything_is_delivered_again() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    app.paid_and_cancelled_orders().await;
    let events = app.event_count().await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner =
        WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
            .await
            .unwrap();
    work_until(
        &runner,
        &app,
        "SELECT count(*) FROM analytics.processed",
        events,
    )
    .await;

    let today = chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string();
    let sales = app
        .get(Analyst, "/v1/analytics/sales?granularity=day")
        .await;
    sales.assert_status(200);
    let expected_day = json!({"bucket": today, "currency": "EUR", "orders": 2, "gross": 5998, "paid": 2999, "refunded": 500});
    let normalise = |v: &serde_json::Value| {
        let mut v = v.clone();
        let t = chrono::DateTime::parse_from_rfc3339(v["bucket"].as_str().unwrap()).unwrap();
        v["bucket"] = json!(t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string());
        v
    };
    assert_eq!(
        sales.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(normalise)
            .collect::<Vec<_>>(),
        std::slice::from_ref(&expected_day)
    );
    let hourly = app
        .get(Analyst, "/v1/analytics/sales?granularity=hour")
        .await;
    let hour_total: i64 = hourly.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["gross"].as_i64().unwrap())
        .sum();
    assert_eq!(hour_total, 5998);
    let funnel = app.get(Analyst, "/v1/analytics/funnel").await;
    assert_eq!(
        funnel.body,
        json!({"placed": 2, "confirmed": 1, "paid": 1, "shipped": 0, "delivered": 0, "cancelled": 1,
               "refunded": 1, "cancellation_rate": 0.5, "refund_rate": 1.0})
    );
    app.get(Storefront, "/v1/analytics/funnel")
        .await
        .assert_problem(403, "forbidden");
    app.get(Analyst, "/v1/analytics/sales?granularity=week")
        .await
        .assert_problem(400, "bad-query");

    // Replay: a new consumer delivers every message again; nothing is counted twice.
    drop(runner);
    s.js.get_stream(&s.relay_config.stream)
        .await
        .unwrap()
        .delete_consumer("analytics")
        .await
        .unwrap();
    let runner =
        WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
            .await
            .unwrap();
    crate::nats::redeliver_all(&runner, events as usize).await;
    let again = app
        .get(Analyst, "/v1/analytics/sales?granularity=day")
        .await;
    assert_eq!(
        again.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(normalise)
            .collect::<Vec<_>>(),
        [expected_day]
    );
    assert_eq!(
        app.get(Analyst, "/v1/analytics/funnel").await.body,
        funnel.body
    );
    s.cleanup().await;
}

#[tokio::test]
async fn a_failing_message_is_retried_then_dead_lettered_while_the_others_go_on() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let customer = app.register_customer().await;
    let s = setup(&app).await;
    let runner =
        WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
            .await
            .unwrap();

    // The analytics tables refuse big orders: every delivery of this one fails.
    sqlx::query("ALTER TABLE analytics.sales ADD CONSTRAINT small CHECK (gross < 100000)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut big = crate::helpers::order_body(&customer);
    big["lines"] = json!([{"sku": "BIG", "name": "Big", "quantity": 1, "unit_price": 200000}]);
    app.post(Storefront, "/v1/orders", big)
        .await
        .assert_status(201);
    app.place_order(&customer).await;
    s.publish_all(&app).await;

    // A message that can never be read goes straight to the dead letters.
    s.js.publish_with_headers(
        format!("{}.order.placed", s.relay_config.subject_prefix),
        {
            let mut h = async_nats::HeaderMap::new();
            h.insert("ce-id", uuid::Uuid::new_v4().to_string().as_str());
            h
        },
        "{\"not\": \"an order\"}".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    work_until(
        &runner,
        &app,
        "SELECT count(*) FROM workers.dead_letters",
        2,
    )
    .await;
    let letters: Vec<(i64, String)> =
        sqlx::query_as("SELECT attempts, error FROM workers.dead_letters ORDER BY attempts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(letters[0].0, 1, "the unreadable one is not retried");
    assert!(letters[0].1.contains("unreadable"));
    assert_eq!(
        letters[1].0, 3,
        "the failing one had every allowed delivery"
    );
    assert!(letters[1].1.contains("small"));

    let dlq = crate::nats::stream_info(&s.js, &s.worker_config.dlq_stream)
        .await
        .state
        .messages;
    assert_eq!(dlq, 2);
    // The terminations were captured as advisories; no message was given up on unsettled.
    let advisories =
        s.js.get_stream(s.worker_config.advisory_stream())
            .await
            .unwrap();
    let terminated = advisories
        .get_last_raw_message_by_subject(&format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{}.analytics",
            s.relay_config.stream
        ))
        .await
        .unwrap();
    let terminated: serde_json::Value = serde_json::from_slice(&terminated.payload).unwrap();
    assert_eq!(terminated["consumer"], "analytics");
    assert!(advisories
        .get_last_raw_message_by_subject(&s.worker_config.max_deliveries_subject("analytics"))
        .await
        .is_err());
    // The other order was counted.
    let funnel = app.get(Analyst, "/v1/analytics/funnel").await;
    assert_eq!(funnel.body["placed"], 1);
    s.cleanup().await;
}

#[tokio::test]
async fn ordo_worker_runs_one_worker_alone() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    app.confirmed_order().await;
    let events = app.event_count().await;
    let s = setup(&app).await;
    s.publish_all(&app).await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["worker", "analytics"])
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_NATS_STREAM", &s.relay_config.stream)
        .env("ORDO_NATS_SUBJECT_PREFIX", &s.relay_config.subject_prefix)
        .env("ORDO_NATS_DLQ_STREAM", &s.worker_config.dlq_stream)
        .env("ORDO_NATS_DLQ_SUBJECT_PREFIX", &s.worker_config.dlq_prefix)
        .env("ORDO_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.processed")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if n == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker process handled {n} of {events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        app.get(Analyst, "/v1/analytics/funnel").await.body["confirmed"],
        1
    );

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["worker", "nobody"])
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_LOG", "off")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no worker is called `nobody`"));
    let _ =
        s.js.delete_consumer_from_stream("analytics", &s.relay_config.stream)
            .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_batch_counts_new_events_once_skips_handled_ones_and_dead_letters_only_the_poison() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let customer = app.register_customer().await;
    let handled_before = app.place_order(&customer).await;
    let twice = app.place_order(&customer).await;
    app.place_order(&customer).await;
    let s = setup(&app).await;
    let runner =
        WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
            .await
            .unwrap();
    s.publish_all(&app).await;

    // One order was handled before (its ack was lost, say): only its record remains.
    let placed_event = |order: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT event_id FROM event_store.events
                  WHERE aggregate_id = $1 AND event_type = 'order.placed'",
            )
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let handled_id = placed_event(handled_before).await;
    sqlx::query("INSERT INTO analytics.processed (event_id) VALUES ($1)")
        .bind(handled_id)
        .execute(&app.pool)
        .await
        .unwrap();
    // Another order's event is in the stream twice (published again after the duplicate
    // window, say).
    let twice_id = placed_event(twice).await;
    let mut conn = app.pool.acquire().await.unwrap();
    let log = ordo_commands::feed::read_batch(&mut conn, Default::default(), 100)
        .await
        .unwrap();
    drop(conn);
    let again = log.iter().find(|e| e.event_id == twice_id).unwrap();
    let mut headers = ordo_workers::relay::headers(again);
    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
    let subject = format!("{}.order.placed", s.relay_config.subject_prefix);
    s.js.publish_with_headers(
        subject.clone(),
        headers,
        ordo_workers::relay::body(again).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // And one message can never be read.
    let mut poison = async_nats::HeaderMap::new();
    poison.insert("ce-id", uuid::Uuid::new_v4().to_string().as_str());
    s.js.publish_with_headers(subject, poison, "{\"not\": \"an order\"}".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The customer and three orders, the repeat and the poison: one fetch, one batch.
    let settled = runner.step(50, Duration::from_secs(5)).await.unwrap();
    assert_eq!(settled, 6);

    let funnel = app.get(Analyst, "/v1/analytics/funnel").await;
    assert_eq!(funnel.body["placed"], 2, "the new orders, each once");
    let sales = app
        .get(Analyst, "/v1/analytics/sales?granularity=day")
        .await;
    let items = sales.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["orders"], 2);
    assert_eq!(items[0]["gross"], 2 * 2999);
    let (processed, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT processed_at) FROM analytics.processed WHERE event_id <> $1",
    )
    .bind(handled_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (processed, transactions),
        (3, 1),
        "the customer and two orders recorded in one transaction"
    );
    let letters: Vec<(i64, String)> =
        sqlx::query_as("SELECT attempts, error FROM workers.dead_letters")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 1, "only the poison is dead-lettered");
    assert_eq!(letters[0].0, 1);
    assert!(letters[0].1.contains("unreadable"), "{}", letters[0].1);

    // Everything was settled: nothing waits for an ack or a redelivery.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        s.js.get_stream(&s.relay_config.stream)
            .await
            .unwrap()
            .get_consumer("analytics")
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} unacknowledged, {} pending",
            info.num_ack_pending,
            info.num_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.cleanup().await;
}

#[tokio::test]
async fn streams_and_consumers_are_updated_to_the_configuration_on_start() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let nats = setup(&app).await;
    WorkerRunner::connect(
        app.pool.clone(),
        Worker::Analytics,
        nats.worker_config.clone(),
    )
    .await
    .unwrap();
    let consumer_of = |stream: String| {
        let js = nats.js.clone();
        async move {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream(stream)
                .await
                .unwrap()
                .get_consumer("analytics")
                .await
                .unwrap();
            consumer.info().await.unwrap().config.clone()
        }
    };
    let before = consumer_of(nats.relay_config.stream.clone()).await;
    assert_eq!(before.max_deliver, 3);

    // An operator (or an older release) left other settings behind.
    let mut stream = crate::nats::stream_info(&nats.js, &nats.relay_config.stream)
        .await
        .config;
    stream.duplicate_window = Duration::from_secs(10);
    nats.js.update_stream(stream).await.unwrap();

    let changed = WorkerConfig {
        max_deliver: 7,
        ack_wait: Duration::from_secs(9),
        ..nats.worker_config.clone()
    };
    WorkerRunner::connect(app.pool.clone(), Worker::Analytics, changed)
        .await
        .unwrap();
    let after = consumer_of(nats.relay_config.stream.clone()).await;
    assert_eq!(after.max_deliver, 7);
    assert_eq!(after.ack_wait, Duration::from_secs(9));
    assert_eq!(after.filter_subject, before.filter_subject);

    nats.relay.ensure_stream().await.unwrap();
    let window = crate::nats::stream_info(&nats.js, &nats.relay_config.stream)
        .await
        .config
        .duplicate_window;
    assert_eq!(window, Duration::from_secs(120), "the relay's window again");
    nats.cleanup().await;
}

/// nats-server 2.9.10 crashes when an update of a stream arrives while another connection is
/// creating it (see `ordo_workers::nats::ensure_stream`). The relay and the three workers of a
/// process start together, on fresh streams the first time: they create their streams and
/// send no update, neither then nor when they start again with the same settings.
#[tokio::test]
async fn the_relay_and_the_workers_starting_together_create_their_streams_without_an_update() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (relay_config, worker_config) = crate::nats::fresh_configs();
    let streams = [
        relay_config.stream.clone(),
        worker_config.dlq_stream.clone(),
        worker_config.advisory_stream(),
    ];
    // Every JetStream request about a stream, as the server receives it.
    let spy = async_nats::connect(crate::nats::NATS).await.unwrap();
    let mut requests = spy.subscribe("$JS.API.STREAM.>").await.unwrap();
    spy.flush().await.unwrap();
    let start_all = || async {
        let relay = Relay::connect(app.pool.clone(), relay_config.clone())
            .await
            .unwrap();
        let workers = Worker::ALL
            .map(|worker| WorkerRunner::connect(app.pool.clone(), worker, worker_config.clone()));
        let (relay, workers) =
            tokio::join!(relay.ensure_stream(), futures::future::join_all(workers));
        relay.unwrap();
        for worker in workers {
            worker.unwrap();
        }
    };
    let seen = |requests: &mut async_nats::Subscriber| {
        let mut seen = Vec::new();
        while let Some(Some(request)) = requests.next().now_or_never() {
            let subject = request.subject.to_string();
            if streams.iter().any(|s| subject.ends_with(&format!(".{s}"))) {
                seen.push(subject);
            }
        }
        seen
    };
    let kinds = |seen: &[String], kind: &str| {
        let prefix = format!("$JS.API.STREAM.{kind}.");
        seen.iter().filter(|s| s.starts_with(&prefix)).count()
    };

    start_all().await;
    // The server copied each request to the spy before answering it: once the spy's own round
    // trip is back, every copy has arrived.
    spy.flush().await.unwrap();
    let first = seen(&mut requests);
    assert_eq!(kinds(&first, "UPDATE"), 0, "{first:?}");
    for stream in &streams {
        let create = format!("$JS.API.STREAM.CREATE.{stream}");
        assert!(first.contains(&create), "{stream} created: {first:?}");
    }
    start_all().await;
    spy.flush().await.unwrap();
    let again = seen(&mut requests);
    assert_eq!(kinds(&again, "UPDATE"), 0, "{again:?}");
    assert_eq!(kinds(&again, "CREATE"), 0, "{again:?}");

    let js = async_nats::jetstream::new(spy.clone());
    let events = crate::nats::stream_info(&js, &streams[0]).await.config;
    assert_eq!(events.duplicate_window, Duration::from_secs(120));
    let dlq = crate::nats::stream_info(&js, &streams[1]).await.config;
    assert_eq!(
        dlq.subjects,
        vec![format!("{}.>", worker_config.dlq_prefix)]
    );
    let advisories = crate::nats::stream_info(&js, &streams[2]).await.config;
    assert!(advisories.max_age > Duration::ZERO);
    for stream in &streams {
        js.delete_stream(stream).await.unwrap();
    }
}

/// A worker asked to stop under a steady flow stops, even when the request comes while a
/// batch lingers for more messages. The linger's wait took the change, and the worker then
/// waited for another change that never came: `ordo-bench pipeline --all-roles` hung once
/// at its end. Under 3,000 messages a second a worker lingers 50 ms for most of each batch,
/// so each of the five stops below most likely lands in a linger; any one of them hung
/// before the fix.
#[tokio::test]
async fn a_worker_stops_when_asked_in_the_middle_of_a_steady_flow() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let s = setup(&app).await;
    let (stop_flow, flowing) = tokio::sync::watch::channel(false);
    let flow = tokio::spawn({
        let js = s.js.clone();
        // A type no worker acts on: each message is only recorded as handled.
        let subject = format!("{}.test.flowing", s.relay_config.subject_prefix);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            while !*flowing.borrow() {
                tick.tick().await;
                let mut acks = Vec::new();
                for _ in 0..30 {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("ce-id", uuid::Uuid::new_v4().to_string().as_str());
                    acks.push(
                        js.publish_with_headers(subject.clone(), headers, "{}".into())
                            .await
                            .unwrap(),
                    );
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                sent += 30;
            }
            sent
        }
    });

    let handled = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analytics.processed")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    for round in 1..=5 {
        let before = handled().await;
        let runner =
            WorkerRunner::connect(app.pool.clone(), Worker::Analytics, s.worker_config.clone())
                .await
                .unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(runner.run(stopped));
        // Long enough for the worker to judge the flow heavy (a quarter second) and settle
        // into lingering batches.
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), running).await;
        assert!(
            ended.is_ok(),
            "round {round}: the worker did not stop within 10 s of being asked"
        );
        ended.unwrap().unwrap();
        let after = handled().await;
        assert!(
            after > before,
            "round {round}: the worker handled nothing of the flow ({before} before, {after} after)"
        );
    }

    stop_flow.send(true).unwrap();
    let sent = flow.await.unwrap();
    assert!(sent > 0);
    let _ =
        s.js.delete_consumer_from_stream("analytics", &s.relay_config.stream)
            .await;
    s.cleanup().await;
}

//! The relay against a real NATS JetStream server: every event once, in commit order, with
//! its headers; a NATS outage delays, never loses or duplicates. Each test uses a stream and
//! subject prefix of its own and deletes the stream at the end.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo::ServeRole;
use ordo_api::Role::Storefront;
use ordo_workers::{Relay, RelayConfig};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TcpProxy, TestApp};

const NATS: &str = "127.0.0.1:4222";

fn config(url: &str) -> RelayConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    RelayConfig {
        stream: format!("ORDO_TEST_{id}"),
        subject_prefix: format!("t{id}.events"),
        ack_timeout: Duration::from_secs(1),
        batch_size: 4,
        ..RelayConfig::new(url)
    }
}

async fn jetstream() -> jetstream::Context {
    jetstream::new(
        async_nats::connect(NATS)
            .await
            .expect("NATS with JetStream runs on 127.0.0.1:4222"),
    )
}

/// Run steps until the relay has published every event in the log. (An event becomes
/// final only once older transactions anywhere on the server have ended, so "nothing to
/// publish right now" is not yet "done".)
async fn drain(app: &TestApp, relay: &Relay, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event_store.events e
              WHERE NOT EXISTS (SELECT 1 FROM relay.checkpoint c WHERE c.stream = $1
                                 AND (c.tx_id, c.global_position) >= (e.tx_id, e.global_position))",
        )
        .bind(stream)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if behind == 0 {
            return;
        }
        if let Err(e) = relay.step().await {
            assert!(Instant::now() < deadline, "relay kept failing: {e}");
        }
        assert!(Instant::now() < deadline, "relay did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn some_events(app: &TestApp) -> String {
    let order = app.confirmed_order().await;
    let payment = app.authorized_payment(&order, 2999).await;
    app.post(
        Storefront,
        &format!("/v1/payments/{payment}/capture"),
        json!({"amount": 2999}),
    )
    .await
    .assert_status(200);
    order
}

#[tokio::test]
async fn every_event_is_published_once_in_commit_order_with_its_headers() {
    let app = spawn_app_with(|c| c.roles = vec![ServeRole::Api]).await;
    let order = some_events(&app).await;
    let config = config(&format!("nats://{NATS}"));
    let relay = Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    drain(&app, &relay, &config.stream).await;

    let js = jetstream().await;
    let mut stream = js.get_stream(&config.stream).await.unwrap();
    let stored: Vec<(String, uuid::Uuid, i64, i64)> = sqlx::query_as(
        "SELECT event_type, event_id, global_position, sequence FROM event_store.events ORDER BY tx_id, global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        stored.len() as u64
    );
    for (i, (event_type, event_id, position, sequence)) in stored.iter().enumerate() {
        let msg = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(
            msg.subject.as_str(),
            format!("{}.{event_type}", config.subject_prefix)
        );
        let h = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(h("Nats-Msg-Id"), Some(event_id.to_string()));
        assert_eq!(h("ce-id"), Some(event_id.to_string()));
        assert_eq!(h("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(h("ce-type"), Some(format!("ordo.{event_type}.v1")));
        assert_eq!(h("ordo-position"), Some(position.to_string()));
        assert_eq!(h("ordo-sequence"), Some(sequence.to_string()));
        assert!(h("ce-time").is_some() && h("ce-source").is_some() && h("traceparent").is_some());
        assert!(h("ordo-correlation-id").is_some() && h("ordo-causation-id").is_some());
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert!(body.get("type").is_none(), "the body is the event's data");
        if event_type == "order.placed" {
            assert_eq!(body["order_id"], order.as_str());
            assert_eq!(h("ce-subject"), Some(order.clone()));
        }
    }
    js.delete_stream(&config.stream).await.unwrap();
}

#[tokio::test]
async fn a_nats_outage_delays_publishing_but_loses_and_duplicates_nothing() {
    let app = spawn_app_with(|c| c.roles = vec![ServeRole::Api]).await;
    let proxy = TcpProxy::start(NATS).await;
    let config = config(&format!("nats://127.0.0.1:{}", proxy.port));
    let relay = Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    some_events(&app).await;
    drain(&app, &relay, &config.stream).await;

    // NATS becomes unreachable: commands go on, the relay cannot publish.
    proxy.cut();
    some_events(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match relay.step().await {
            Err(_) => break,
            // The new events are not final yet.
            Ok(0) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(n) => panic!("{n} events acknowledged without NATS"),
        }
        assert!(
            Instant::now() < deadline,
            "the relay never tried to publish"
        );
    }

    proxy.restore();
    drain(&app, &relay, &config.stream).await;
    // As if the process died after publishing but before its checkpoint: publish again.
    sqlx::query("UPDATE relay.checkpoint SET tx_id = '0', global_position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    drain(&app, &relay, &config.stream).await;

    let js = jetstream().await;
    let mut stream = js.get_stream(&config.stream).await.unwrap();
    let events = app.event_count().await;
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        events as u64,
        "every event exactly once"
    );
    js.delete_stream(&config.stream).await.unwrap();
}

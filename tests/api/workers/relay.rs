//! The relay against a real NATS JetStream server: every event once, in commit order, with
//! its headers; a NATS outage delays, never loses or duplicates. Each test uses a stream and
//! subject prefix of its own and deletes the stream at the end.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo::ProcessRole;
use ordo_api::Role::Storefront;
use ordo_workers::{Relay, RelayConfig};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::helpers::{spawn_app_with, TcpProxy, TestApp};
use crate::nats::relay_all;

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

async fn some_events(app: &TestApp) -> String {
    let customer = app.register_customer().await;
    app.paid_order(&customer).await.order
}

#[tokio::test]
async fn every_event_is_published_once_in_commit_order_with_its_headers() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let order = some_events(&app).await;
    // And an event of another sales channel: its messages carry that channel.
    app.post(
        ordo_api::Role::Admin,
        "/v1/channels",
        json!({"id": "eu-web", "name": "EU"}),
    )
    .await
    .assert_status(201);
    let eu_key = ordo_api::auth::create_key_in(&app.pool, Storefront, "eu", Some("eu-web"))
        .await
        .unwrap();
    let eu_customer = app
        .client
        .post(app.url("/v1/customers"))
        .bearer_auth(&eu_key)
        .json(&json!({"email": "eu@example.com", "name": "Eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(eu_customer.status(), 201);
    let config = config(&format!("nats://{NATS}"));
    let relay = Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    relay_all(&app, &relay, &config.stream).await;

    let js = jetstream().await;
    let mut stream = js.get_stream(&config.stream).await.unwrap();
    let stored: Vec<(String, uuid::Uuid, i64, i64, String)> = sqlx::query_as(
        "SELECT event_type, event_id, global_position, sequence, metadata ->> 'channel'
           FROM event_store.events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        stored.len() as u64
    );
    let mut channels = std::collections::BTreeSet::new();
    for (i, (event_type, event_id, position, sequence, channel)) in stored.iter().enumerate() {
        let msg = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(
            msg.subject.as_str(),
            format!("{}.{event_type}", config.subject_prefix)
        );
        let h = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(h("Nats-Msg-Id"), Some(event_id.to_string()));
        assert_eq!(h("ce-id"), Some(event_id.to_string()));
        assert_eq!(h("ce-specversion").as_deref(), Some("1.0"));
        let version = ordo_domain::schema::event_schemas()
            .into_iter()
            .find(|s| s.event_type == event_type.as_str())
            .map(|s| s.version)
            .unwrap();
        assert_eq!(h("ce-type"), Some(format!("ordo.{event_type}.v{version}")));
        assert_eq!(h("ordo-position"), Some(position.to_string()));
        assert_eq!(h("ordo-sequence"), Some(sequence.to_string()));
        assert_eq!(
            h(ordo_workers::relay::CHANNEL_HEADER).as_ref(),
            Some(channel)
        );
        channels.insert(h("ce-ordochannel").unwrap());
        assert!(h("ce-time").is_some() && h("ce-source").is_some() && h("traceparent").is_some());
        assert!(h("ordo-correlation-id").is_some() && h("ordo-causation-id").is_some());
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert!(body.get("type").is_none(), "the body is the event's data");
        if event_type == "order.placed" {
            assert_eq!(body["order_id"], order.as_str());
            assert_eq!(h("ce-subject"), Some(order.clone()));
        }
    }
    assert_eq!(
        channels.into_iter().collect::<Vec<_>>(),
        ["default", "eu-web"]
    );
    js.delete_stream(&config.stream).await.unwrap();
}

#[tokio::test]
async fn a_nats_outage_delays_publishing_but_loses_and_duplicates_nothing() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let proxy = TcpProxy::start(NATS).await;
    let config = config(&format!("nats://127.0.0.1:{}", proxy.port));
    let relay = Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    some_events(&app).await;
    relay_all(&app, &relay, &config.stream).await;

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
    relay_all(&app, &relay, &config.stream).await;
    // As if the process died after publishing but before its checkpoint: publish again.
    sqlx::query("UPDATE relay.checkpoint SET global_position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    relay_all(&app, &relay, &config.stream).await;

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

/// The relay as `ordo serve` runs it (leading when it holds the lock), in the background.
fn run(relay: Relay) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(relay.run(stopped)))
}

/// Messages in the stream, and what the relay's checkpoint row says: the line and how many
/// publications it counted.
async fn published(app: &TestApp, stream: &str) -> (u64, i64, i64) {
    let messages = crate::nats::stream_info(&jetstream().await, stream)
        .await
        .state
        .messages;
    let (position, count): (i64, i64) =
        sqlx::query_as("SELECT global_position, published FROM relay.checkpoint WHERE stream = $1")
            .bind(stream)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    (messages, position, count)
}

/// Poll `published` until `done` holds (a deadline, not a guess at how long it takes).
async fn until(
    app: &TestApp,
    stream: &str,
    what: &str,
    done: impl Fn((u64, i64, i64)) -> bool,
) -> (u64, i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if jetstream().await.get_stream(stream).await.is_ok() {
            let state = published(app, stream).await;
            if done(state) {
                return state;
            }
            assert!(Instant::now() < deadline, "{what}: still {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn last_event(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT max(global_position) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Commit some more events, then wait until the stream holds every event of the log and the
/// line has reached the last one: (messages in the stream, publications the relay counted,
/// events in the log).
async fn more_events_all_published(app: &TestApp, stream: &str, what: &str) -> (u64, i64, i64) {
    some_events(app).await;
    let events = app.event_count().await;
    let last = last_event(app).await;
    let (messages, _, count) =
        until(app, stream, what, |s| s.0 == events as u64 && s.1 >= last).await;
    (messages, count, events)
}

/// Stop a relay started with [`run`] and delete its stream.
async fn finish(stop: watch::Sender<bool>, task: tokio::task::JoinHandle<()>, stream: &str) {
    let _ = stop.send(true);
    task.await.unwrap();
    jetstream().await.delete_stream(stream).await.unwrap();
}

/// A write transaction left open on the server (the positions are in commit order, so no
/// older transaction can still commit an event below the ones the relay sees) holds nothing
/// back: every event is published while it stays open.
#[tokio::test]
async fn a_transaction_left_open_on_the_server_does_not_hold_the_relay_back() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let config = config(&format!("nats://{NATS}"));
    let (stop, task) = run(Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap());

    let mut open = ordo_commands::db::begin(&app.pool).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *open)
        .await
        .unwrap();
    let (messages, count, events) = more_events_all_published(
        &app,
        &config.stream,
        "published while a transaction is open",
    )
    .await;
    assert_eq!(messages, events as u64);
    assert_eq!(count, events, "each event published once");
    open.rollback().await.unwrap();

    finish(stop, task, &config.stream).await;
}

#[tokio::test]
async fn one_relay_leads_and_a_standby_takes_over_when_it_stops() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let config = config(&format!("nats://{NATS}"));
    let connect = || Relay::connect(app.pool.clone(), config.clone());
    let (stop_first, first) = run(connect().await.unwrap());
    more_events_all_published(&app, &config.stream, "the first relay publishes").await;

    let (stop_second, second) = run(connect().await.unwrap());
    let (_, count, events) =
        more_events_all_published(&app, &config.stream, "both relays running").await;
    assert_eq!(count, events, "only one relay published");

    // The leader stops; the standby takes the lock and goes on.
    let _ = stop_first.send(true);
    first.await.unwrap();
    let (messages, count, events) =
        more_events_all_published(&app, &config.stream, "the standby takes over").await;
    assert_eq!(messages, events as u64);
    assert_eq!(count, events, "every event published once");

    finish(stop_second, second, &config.stream).await;
}

#[tokio::test]
async fn the_leading_relay_rides_out_a_nats_outage_and_publishes_everything_once() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let proxy = TcpProxy::start(NATS).await;
    let config = config(&format!("nats://127.0.0.1:{}", proxy.port));
    let (stop, task) = run(Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap());
    more_events_all_published(&app, &config.stream, "published before the outage").await;

    proxy.cut();
    some_events(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM relay.checkpoint WHERE stream = $1")
                .bind(&config.stream)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if error.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the relay never met the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.restore();
    let (messages, count, events) =
        more_events_all_published(&app, &config.stream, "caught up after the outage").await;
    assert_eq!(messages, events as u64, "every event in the stream once");
    assert_eq!(count, events, "no read counted twice");

    finish(stop, task, &config.stream).await;
}

#[tokio::test]
async fn a_leader_whose_lock_session_ends_leads_again_and_loses_nothing() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let config = config(&format!("nats://{NATS}"));
    let (stop, task) = run(Relay::connect(app.pool.clone(), config.clone())
        .await
        .unwrap());
    more_events_all_published(&app, &config.stream, "published").await;

    // The session holding the relay's advisory lock ends (a restart, a network cut).
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
          WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND granted AND pid <> pg_backend_pid()",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(terminated, vec![true], "one session held the relay's lock");

    let (messages, _, events) =
        more_events_all_published(&app, &config.stream, "published after the lock came back").await;
    assert_eq!(messages, events as u64);
    let holders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND granted",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(holders, 1, "the relay holds its lock again");

    finish(stop, task, &config.stream).await;
}

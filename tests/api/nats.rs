//! Shared set-up for tests against real NATS JetStream: a relay and a worker configuration
//! on a stream, subject prefix and dead-letter stream of the test's own.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ordo_workers::{Relay, RelayConfig, WorkerConfig, WorkerRunner};

use crate::helpers::TestApp;

pub const NATS: &str = "nats://127.0.0.1:4222";

pub struct Setup {
    pub relay: Relay,
    pub relay_config: RelayConfig,
    pub worker_config: WorkerConfig,
    pub js: jetstream::Context,
}

/// Step `relay` until every event in the log is on `stream` (a failing step is tried again
/// until the deadline).
pub async fn relay_all(app: &TestApp, relay: &Relay, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event_store.events e WHERE NOT EXISTS (SELECT 1 FROM relay.checkpoint c
              WHERE c.stream = $1 AND c.global_position >= e.global_position)",
        )
        .bind(stream)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if behind == 0 {
            return;
        }
        let stepped = relay.step().await;
        assert!(
            Instant::now() < deadline,
            "the relay did not catch up ({behind} behind; last step: {stepped:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay's and a worker's configuration on streams and prefixes of their own, none of
/// them created yet.
pub fn fresh_configs() -> (RelayConfig, WorkerConfig) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let relay_config = RelayConfig {
        stream: format!("ORDO_TEST_{id}"),
        subject_prefix: format!("t{id}.events"),
        ..RelayConfig::new(NATS)
    };
    let worker_config = WorkerConfig {
        stream: relay_config.stream.clone(),
        subject_prefix: relay_config.subject_prefix.clone(),
        dlq_stream: format!("ORDO_TEST_DLQ_{id}"),
        dlq_prefix: format!("t{id}.dlq"),
        max_deliver: 3,
        backoff: vec![Duration::from_millis(100)],
        ..WorkerConfig::new(NATS)
    };
    (relay_config, worker_config)
}

pub async fn setup(app: &TestApp) -> Setup {
    let (relay_config, worker_config) = fresh_configs();
    let relay = Relay::connect(app.pool.clone(), relay_config.clone())
        .await
        .unwrap();
    relay.ensure_stream().await.unwrap();
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
    Setup {
        relay,
        relay_config,
        worker_config,
        js,
    }
}

impl Setup {
    pub async fn publish_all(&self, app: &TestApp) {
        relay_all(app, &self.relay, &self.relay_config.stream).await;
    }

    pub async fn cleanup(&self) {
        let _ = self.js.delete_stream(&self.relay_config.stream).await;
        let _ = self.js.delete_stream(&self.worker_config.dlq_stream).await;
        let _ = self
            .js
            .delete_stream(self.worker_config.advisory_stream())
            .await;
    }
}

/// Step the worker until `done` holds.
pub async fn work_until(runner: &WorkerRunner, app: &TestApp, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap();
        if n >= expected {
            assert_eq!(n, expected, "{sql}");
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n} of {expected}");
        runner.step(50, Duration::from_millis(200)).await.unwrap();
    }
}

/// Step the worker until it has settled `events` messages again (after a replay or a new
/// consumer), whatever it did with them.
pub async fn redeliver_all(runner: &WorkerRunner, events: usize) {
    let mut redelivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while redelivered < events {
        redelivered += runner.step(50, Duration::from_millis(200)).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "only {redelivered} of {events} redelivered"
        );
    }
}

/// A stream's configuration and state, as the server has them now.
pub async fn stream_info(js: &jetstream::Context, stream: &str) -> jetstream::stream::Info {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

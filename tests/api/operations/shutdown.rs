//! SIGTERM under load: the real binary stops accepting, answers what it accepted, lets its
//! roles checkpoint and exits 0 — and every command it acknowledged is in the log.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::commands::crash::create_key;
use crate::helpers::{fresh_database_url, order_body, read};
use crate::nats::NATS;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// `ordo serve` with every role but the workers (their dead-letter stream is shared),
    /// the relay on a stream of this test's own.
    async fn start(database_url: &str, stream: &str, prefix: &str) -> Self {
        Self::start_with(
            database_url,
            &[
                ("ORDO_ROLES", "api,projector,process-manager,relay"),
                ("ORDO_NATS_STREAM", stream),
                ("ORDO_NATS_SUBJECT_PREFIX", prefix),
                ("ORDO_SHUTDOWN_TIMEOUT_SECS", "30"),
            ],
        )
        .await
    }

    async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ordo"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ORDO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("NATS_URL", NATS)
            .env("ORDO_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{}/readyz", server.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM");
    }

    /// Wait for the process to exit on its own.
    async fn exited(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One place-order request, and whether the signal had been sent when it left and when its
/// outcome came back.
#[derive(Debug)]
struct Sent {
    order_id: Uuid,
    sent_after_signal: bool,
    seen_after_signal: bool,
    outcome: Outcome,
}

/// How one place-order request ended.
#[derive(Debug)]
enum Outcome {
    Answered { status: u16, body: Value },
    ConnectionError,
}

#[tokio::test]
async fn sigterm_under_load_exits_zero_and_loses_no_acknowledged_command() {
    let database_url = fresh_database_url();
    let key = create_key(&database_url);
    let id = Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ORDO_TEST_{id}"), format!("t{id}.events"));
    let mut server = Server::start(&database_url, &stream, &prefix).await;
    let client = reqwest::Client::new();
    let customer = read(
        client
            .post(format!("{}/v1/customers", server.base))
            .bearer_auth(&key)
            .json(&json!({"email": "load@example.com", "name": "Load"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    customer.assert_status(201);
    let customer_id = customer.id();

    // Arrange: clients placing orders back to back, each order with an id of its own, until
    // the server is gone.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (base, key, customer_id) = (server.base.clone(), key.clone(), customer_id.clone());
        let (acknowledged, signalled) = (acknowledged.clone(), signalled.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut outcomes = Vec::new();
            loop {
                let order_id = Uuid::new_v4();
                let mut body = order_body(&customer_id);
                body["order_id"] = json!(order_id);
                let sent_after_signal = signalled.load(Ordering::SeqCst);
                let outcome = match client
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.bytes().await {
                            Ok(bytes) => Outcome::Answered {
                                status,
                                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                            },
                            Err(_) => Outcome::ConnectionError,
                        }
                    }
                    Err(_) => Outcome::ConnectionError,
                };
                if matches!(outcome, Outcome::Answered { status: 201, .. }) {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                let seen_after_signal = signalled.load(Ordering::SeqCst);
                let gone = matches!(outcome, Outcome::ConnectionError) && seen_after_signal;
                outcomes.push(Sent {
                    order_id,
                    sent_after_signal,
                    seen_after_signal,
                    outcome,
                });
                if gone {
                    return outcomes;
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::SeqCst) < 100 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act: SIGTERM in the middle of it.
    signalled.store(true, Ordering::SeqCst);
    server.terminate();
    let status = server.exited(Duration::from_secs(60)).await;

    // Assert: a clean exit, and every 201 in the log at the position it answered with.
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(
            tokio::time::timeout(Duration::from_secs(30), client)
                .await
                .expect("clients stop once the server is gone")
                .unwrap(),
        );
    }
    let mut acked = Vec::new();
    for sent in &outcomes {
        match &sent.outcome {
            Outcome::Answered { status: 201, body } => {
                assert_eq!(body["id"], json!(sent.order_id));
                acked.push((
                    sent.order_id.to_string(),
                    body["position"].as_i64().unwrap(),
                ));
            }
            Outcome::Answered { status: 503, .. } => {}
            Outcome::Answered { status, body } => {
                panic!("only 201 or 503 while shutting down, got {status}: {body}")
            }
            Outcome::ConnectionError => assert!(
                sent.seen_after_signal,
                "a connection error before the signal: {sent:?}"
            ),
        }
    }
    assert!(acked.len() >= 100);
    // Requests in flight when the signal came were answered, not dropped (16 clients keep
    // requests in flight all the time).
    let drained = outcomes
        .iter()
        .filter(|s| {
            !s.sent_after_signal
                && s.seen_after_signal
                && matches!(s.outcome, Outcome::Answered { status: 201, .. })
        })
        .count();
    assert!(
        drained >= 1,
        "no request in flight at the signal was answered"
    );

    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let placed: std::collections::HashMap<String, i64> = sqlx::query_as(
        "SELECT aggregate_id, global_position FROM event_store.events WHERE event_type = 'order.placed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for (order_id, position) in &acked {
        assert_eq!(
            placed.get(order_id),
            Some(position),
            "acknowledged order {order_id} is in the log where its answer said"
        );
    }

    // After a restart the read model has every acknowledged order, and an idle server
    // stops cleanly too.
    let mut server = Server::start(&database_url, &stream, &prefix).await;
    let max_position = acked.iter().map(|(_, p)| *p).max().unwrap();
    for (order_id, _) in &acked {
        let order = read(
            client
                .get(format!(
                    "{}/v1/orders/{order_id}?min_position={max_position}",
                    server.base
                ))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        order.assert_status(200);
        assert_eq!(order.body["status"], "placed");
    }
    server.terminate();
    assert!(server.exited(Duration::from_secs(60)).await.success());

    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let _ = js.delete_stream(&stream).await;
    pool.close().await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_that_outlasts_the_shutdown_timeout_does_not_keep_the_process_alive() {
    let database_url = fresh_database_url();
    let key = create_key(&database_url);
    let mut server = Server::start_with(
        &database_url,
        &[("ORDO_ROLES", "api"), ("ORDO_SHUTDOWN_TIMEOUT_SECS", "1")],
    )
    .await;
    let client = reqwest::Client::new();
    let customer = read(
        client
            .post(format!("{}/v1/customers", server.base))
            .bearer_auth(&key)
            .json(&json!({"email": "slow@example.com", "name": "Slow"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    customer.assert_status(201);

    // Arrange: a command stuck behind a lock this test holds on the event store (nothing
    // in Ordo times a statement out, so without the shutdown timeout it would wait for ever).
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let mut blocker = ordo_commands::db::begin(&pool).await.unwrap();
    sqlx::query("LOCK TABLE event_store.events IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let stuck = tokio::spawn(
        client
            .post(format!("{}/v1/orders", server.base))
            .bearer_auth(&key)
            .json(&order_body(&customer.id()))
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
              WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND c.relname = 'events' AND NOT l.granted",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the command never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    let signalled = Instant::now();
    server.terminate();
    let status = server.exited(Duration::from_secs(30)).await;

    // Assert: out soon after the 1 s timeout, not after the command; the command unanswered.
    assert!(status.success(), "exit status: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck command gets no answer, so nothing is acknowledged"
    );
    blocker.rollback().await.unwrap();
    pool.close().await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}

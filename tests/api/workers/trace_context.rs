//! One trace from the storefront's request to the webhook: the request's W3C `traceparent`
//! is stored with the events, sent as a NATS header by the relay, continued by the worker
//! and sent on with the webhook; spans are exported over OTLP when an exporter is set up;
//! and a scenario's logs hold none of the customer's personal data.
//!
//! The exporting and capturing tests install their subscriber for their own thread only (a
//! current-thread runtime runs the app, the client and the worker there), so they neither
//! see nor disturb the tests running beside them.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use opentelemetry::trace::TracerProvider as _;
use ordo_api::Role::{Admin, Storefront, Support};
use ordo_workers::{Relay, RelayConfig, Worker, WorkerConfig, WorkerRunner};
use serde_json::json;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::helpers::{order_body, spawn_app_with, TestApp};
use crate::nats::NATS;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// tracing-core caches each callsite's interest when it is first hit. While a single
/// dispatcher is registered it asks only the hitting thread's default, so a callsite first hit
/// on another test's thread would be cached as of no interest to this test's subscriber. An
/// idle second dispatcher, alive for the whole process, makes it ask every dispatcher.
fn share_callsite_interest() {
    static IDLE: OnceLock<tracing::Dispatch> = OnceLock::new();
    IDLE.get_or_init(|| {
        tracing::Dispatch::new(
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::OFF),
        )
    });
}

fn incoming_traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// A test's own stream, subject prefix and dead-letter stream, with the app pointed at them.
struct Pipeline {
    app: TestApp,
    relay: Relay,
    worker_config: WorkerConfig,
    js: jetstream::Context,
    stream: String,
}

impl Pipeline {
    async fn start() -> Self {
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
        let worker_config = WorkerConfig {
            stream: stream.clone(),
            subject_prefix: prefix,
            dlq_stream: format!("ORDO_TEST_DLQ_{id}"),
            dlq_prefix: format!("t{id}.dlq"),
            max_deliver: 3,
            backoff: vec![Duration::from_millis(100)],
            ..WorkerConfig::new(NATS)
        };
        let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
        Self {
            app,
            relay,
            worker_config,
            js,
            stream,
        }
    }

    /// Relay until every event in the log is on the stream.
    async fn publish_all(&self) {
        crate::nats::relay_all(&self.app, &self.relay, &self.stream).await;
    }

    async fn worker(&self, worker: Worker) -> WorkerRunner {
        WorkerRunner::connect(self.app.pool.clone(), worker, self.worker_config.clone())
            .await
            .unwrap()
    }

    /// Step `runner` until `sql` counts at least one row.
    async fn work_until(&self, runner: &WorkerRunner, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.app.pool)
                .await
                .unwrap();
            if n > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: nothing yet");
            runner.step(50, Duration::from_millis(100)).await.unwrap();
        }
    }

    async fn cleanup(&self) {
        let _ = self.js.delete_stream(&self.stream).await;
        let _ = self.js.delete_stream(&self.worker_config.dlq_stream).await;
        let _ = self
            .js
            .delete_stream(self.worker_config.advisory_stream())
            .await;
    }
}

/// Place an order for a new customer, the order carrying `traceparent`; the order's id.
async fn traced_order(app: &TestApp, traceparent: &str) -> String {
    let customer = app.register_customer().await;
    app.post_with(
        Storefront,
        "/v1/orders",
        order_body(&customer),
        &[("traceparent", traceparent)],
    )
    .await
    .assert_status(201)
    .id()
}

async fn stored_traceparent(app: &TestApp, order: &str) -> String {
    sqlx::query_scalar(
        "SELECT metadata ->> 'traceparent' FROM event_store.events
          WHERE aggregate_id = $1 AND event_type = 'order.placed'",
    )
    .bind(order)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// `00-<trace id>-<parent id>-<flags>` split, after checking the shape.
fn parts(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert!(
        p.len() == 4 && p[1].len() == 32 && p[2].len() == 16,
        "not a traceparent: {traceparent}"
    );
    (p[1].to_owned(), p[2].to_owned())
}

/// A webhook receiver recording the headers of every request; answers 200.
async fn receiver() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let log: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let seen = log.clone();
    let router = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(headers);
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/hook"), log)
}

#[tokio::test]
async fn a_requests_trace_id_reaches_the_event_the_nats_message_and_the_webhook() {
    let p = Pipeline::start().await;
    let (hook, received) = receiver().await;
    p.app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": hook, "event_types": ["order.placed"]}),
        )
        .await
        .assert_status(201);
    let order = traced_order(&p.app, &incoming_traceparent()).await;

    // In the event's metadata, and in its history.
    assert_eq!(parts(&stored_traceparent(&p.app, &order).await).0, TRACE_ID);
    let history = p
        .app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    let traceparent = history.body["items"][0]["metadata"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(parts(&traceparent).0, TRACE_ID);

    // In the message's headers.
    p.publish_all().await;
    let mut stream = p.js.get_stream(&p.stream).await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    let mut found = None;
    for seq in 1..=messages {
        let message = stream.get_raw_message(seq).await.unwrap();
        if message.subject.ends_with(".order.placed") {
            found = message
                .headers
                .get("traceparent")
                .map(|v| v.as_str().to_owned());
        }
    }
    let header = found.expect("the order.placed message has a traceparent header");
    assert_eq!(parts(&header).0, TRACE_ID);

    // In the webhook the delivery pool sends, as a call of its own in the same trace.
    let runner = p.worker(Worker::Integration).await;
    p.work_until(&runner, "SELECT count(*) FROM integration.outbox")
        .await;
    let pool = crate::workers::webhooks::quick_pool(&p.app, None, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook sent");
        pool.step().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = received.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let webhook = sent[0]
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the webhook carries a traceparent");
    let (trace_id, parent_id) = parts(webhook);
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(parent_id, PARENT_ID);
    p.cleanup().await;
}

#[tokio::test]
async fn a_request_without_a_traceparent_starts_a_trace_of_its_own() {
    let app = spawn_app_with(|c| c.roles = vec![ordo::ProcessRole::Api]).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    let (trace_id, _) = parts(&stored_traceparent(&app, &order).await);
    assert_ne!(trace_id, "0".repeat(32));
    assert_ne!(trace_id, TRACE_ID);
}

/// A one-request-per-connection HTTP server on a thread of its own (the exporter's client
/// blocks): records each request body, answers 200 with an empty OTLP response.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                seen.lock().unwrap().push(body);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (url, bodies)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn spans_are_exported_over_otlp_in_the_requests_trace() {
    let (endpoint, bodies) = otlp_receiver();
    let provider = ordo_runtime::telemetry::tracer_provider(Some(&endpoint)).unwrap();
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ordo-test"))
            .with_filter(tracing_subscriber::EnvFilter::new("info")),
    );
    share_callsite_interest();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app_with(|c| c.roles = vec![ordo::ProcessRole::Api]).await;
    let order = traced_order(&app, &incoming_traceparent()).await;

    // Exported, the stored traceparent names the request's span: same trace, new parent.
    let (trace_id, parent_id) = parts(&stored_traceparent(&app, &order).await);
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(parent_id, PARENT_ID);

    let trace_id = hex_bytes(TRACE_ID);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = provider.force_flush();
        let exported = bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.windows(trace_id.len()).any(|w| w == trace_id.as_slice()));
        if exported {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span of the trace reached the OTLP receiver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = provider.shutdown();
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// This thread's logs as JSON lines, filtered by `filter` (env-filter syntax), until the
/// guard drops. Use it on a `current_thread` runtime, so that the app's tasks log here too.
pub(crate) fn capture_logs(filter: &str) -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .json()
        .finish();
    share_callsite_interest();
    (capture, tracing::subscriber::set_default(subscriber))
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_scenarios_logs_hold_no_email_name_or_address() {
    // The test's own HTTP client logs its URLs (with the query) at debug: not the app's.
    let (capture, _guard) = capture_logs("debug,reqwest=info,hyper=info,hyper_util=info");

    let p = Pipeline::start().await;
    let email = format!("grace.{}@example.com", uuid::Uuid::new_v4().simple());
    let name = "Grace Brewster Hopper";
    let customer = p
        .app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": email, "name": name, "phone": "+49 30 1234567"}),
        )
        .await
        .assert_status(201)
        .id();
    // Refused input quoting the address is answered, not logged.
    let _ = p
        .app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": email, "name": ""}),
        )
        .await;
    let order = p.app.place_order(&customer).await;
    let _ = p.app.get(Support, &format!("/v1/orders/{order}")).await;
    p.app
        .get(Support, &format!("/v1/customers?email={email}"))
        .await
        .assert_status(200);
    p.publish_all().await;
    let runner = p.worker(Worker::Notification).await;
    p.work_until(
        &runner,
        "SELECT count(*) FROM notification.notifications WHERE kind IS NOT NULL",
    )
    .await;
    p.cleanup().await;

    let logs = capture.text();
    // The capture saw the scenario (the worker's span, the order's id)...
    assert!(logs.contains("worker.handle"), "nothing captured: {logs}");
    assert!(logs.contains(&order), "the order never appears in the logs");
    // ...and none of the customer's personal data.
    for personal in [email.as_str(), name, "+49 30 1234567", "1 Main St"] {
        assert!(!logs.contains(personal), "`{personal}` was logged");
    }
}

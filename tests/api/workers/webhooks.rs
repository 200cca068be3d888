//! Webhooks: endpoints registered through the API; the integration worker (on real
//! JetStream, streams and consumers of the test's own) writes one delivery per endpoint,
//! the delivery pool POSTs it signed the Standard Webhooks way, records every attempt and
//! retries a failure on its schedule, then gives up on that delivery alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Storefront};
use ordo_workers::integration::{self, sign, DeliveryConfig, DeliveryPool};
use ordo_workers::retry::RetrySchedule;
use ordo_workers::{Worker, WorkerRunner};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::helpers::{read, spawn_app_with, TestApp};
use crate::nats::{setup, Setup};

#[test]
fn the_signature_matches_the_standard_webhooks_test_vector() {
    let signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
    )
    .unwrap();
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/// A webhook receiver on 127.0.0.1: records every request, answers `answer(n)` to the n-th
/// (from 1).
pub(crate) struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

/// A TCP listener that hands axum only connections whose TLS handshake succeeded.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((socket, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate ends here.
            if let Ok(tls) = self.acceptor.accept(socket).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Receiver {
    pub(crate) async fn start(answer: fn(usize) -> u16) -> Self {
        Self::start_on(answer, None).await
    }

    /// With `tls`, an `https://` receiver presenting the acceptor's certificate.
    pub async fn start_on(
        answer: fn(usize) -> u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let log: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
        let seen = log.clone();
        let router = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((headers, body));
                        seen.len()
                    };
                    StatusCode::from_u16(answer(n)).unwrap()
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, router).await });
                format!("http://{addr}/hook")
            }
            Some(acceptor) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor,
                };
                tokio::spawn(async move { axum::serve(listener, router).await });
                format!("https://{addr}/hook")
            }
        };
        Self { url, log }
    }

    pub fn received(&self) -> Vec<(HeaderMap, String)> {
        self.log.lock().unwrap().clone()
    }
}

impl Setup {
    pub(crate) async fn worker(&self, app: &TestApp) -> WorkerRunner {
        WorkerRunner::connect(
            app.pool.clone(),
            Worker::Integration,
            self.worker_config.clone(),
        )
        .await
        .unwrap()
    }

    /// Step the integration worker and `deliveries` until `sql` counts `expected`.
    pub(crate) async fn deliver_until(
        &self,
        app: &TestApp,
        deliveries: &DeliveryPool,
        sql: &str,
        expected: i64,
    ) {
        let runner = self.worker(app).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap();
            if n >= expected {
                assert_eq!(n, expected, "{sql}");
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: {n} of {expected}");
            runner.step(50, Duration::from_millis(50)).await.unwrap();
            if deliveries.step().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A delivery pool with small timeouts and quick retries (`attempts` in all).
pub(crate) fn quick_pool(
    app: &TestApp,
    client: Option<ordo_workers::egress::WebhookClient>,
    attempts: u32,
) -> Arc<DeliveryPool> {
    DeliveryPool::new(
        app.pool.clone(),
        // The receivers run on 127.0.0.1.
        client.unwrap_or_else(|| integration::client_with(None, true).unwrap()),
        DeliveryConfig {
            timeout: Duration::from_secs(2),
            poll: Duration::from_millis(20),
            schedule: RetrySchedule::quick(Duration::from_millis(30), attempts),
            ..DeliveryConfig::default()
        },
    )
}

/// The attempts of an endpoint's only delivery, newest first.
pub(crate) async fn history(app: &TestApp, endpoint: &str) -> (Value, Vec<Value>) {
    let items = deliveries(app, endpoint).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let delivery = app
        .get(
            Admin,
            &format!(
                "/v1/webhooks/{endpoint}/deliveries/{}",
                items[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    delivery.assert_status(200);
    let history = delivery.body["history"].as_array().unwrap().clone();
    (delivery.body, history)
}

/// Register an endpoint as admin; its id and secret.
pub(crate) async fn register(app: &TestApp, url: &str, event_types: Value) -> (String, String) {
    let created = app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": url, "event_types": event_types}),
        )
        .await;
    created.assert_status(201);
    let id = created.id();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/webhooks/{id}").as_str())
    );
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (id, secret)
}

pub(crate) async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let resp = app
        .get(Admin, &format!("/v1/webhooks/{endpoint}/deliveries"))
        .await;
    resp.assert_status(200);
    resp.body["items"].as_array().unwrap().clone()
}

pub(crate) async fn placed_event_id(app: &TestApp, order: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM event_store.events WHERE aggregate_id = $1 AND event_type = 'order.placed'",
    )
    .bind(order)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    id.to_string()
}

#[tokio::test]
async fn webhook_registration_is_admin_only_and_validated() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["order.placed", "payment.*", "*"]});
    app.post(Storefront, "/v1/webhooks", body.clone())
        .await
        .assert_problem(403, "forbidden");
    let bad = app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": "ftp://example.com", "event_types": ["order.placed", "order*", 7]}),
        )
        .await;
    bad.assert_problem(422, "validation");
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["url", "event_types[1]", "event_types[2]"]);
    app.post(
        Admin,
        "/v1/webhooks",
        json!({"url": "https://example.com/h", "event_types": []}),
    )
    .await
    .assert_problem(422, "validation");
    let raw = |content_type: &'static str, body: &'static str| {
        app.client
            .post(app.url("/v1/webhooks"))
            .bearer_auth(app.key(Admin))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    read(raw("text/plain", "{}").await.unwrap())
        .await
        .assert_problem(415, "unsupported-media-type");
    read(raw("application/json", "{\"url\":").await.unwrap())
        .await
        .assert_problem(400, "malformed-json");

    let (id, _) = register(&app, "http://127.0.0.1:9/hook", body["event_types"].clone()).await;
    assert_eq!(deliveries(&app, &id).await, Vec::<Value>::new());
    app.get(
        Admin,
        &format!("/v1/webhooks/{}/deliveries", uuid::Uuid::new_v4()),
    )
    .await
    .assert_problem(404, "not-found");
    app.get(Storefront, &format!("/v1/webhooks/{id}/deliveries"))
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn an_order_placed_is_posted_signed_to_a_subscribed_endpoint() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Receiver::start(|_| 200).await;
    let (endpoint, secret) = register(&app, &hook.url, json!(["order.*"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let pool = quick_pool(&app, None, 3);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'delivered'",
        1,
    )
    .await;

    // Only the order's event: the customer's is not subscribed to.
    let received = hook.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let (headers, body) = &received[0];
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let event_id = placed_event_id(&app, &order).await;
    assert_eq!(header("webhook-id"), event_id);
    assert_eq!(header("content-type"), "application/json");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    assert_eq!(
        header("webhook-signature"),
        sign(&secret, &event_id, timestamp, body).unwrap()
    );
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "order.placed");
    assert!(payload["timestamp"].is_string());
    assert_eq!(payload["data"]["order_id"], json!(order));

    let (delivery, history) = history(&app, &endpoint).await;
    assert_eq!(delivery["event_id"], json!(event_id));
    assert_eq!(delivery["event_type"], "order.placed");
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status_code"], 200);
    assert!(delivery["delivered_at"].is_string());
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["attempt"], 1);
    assert_eq!(history[0]["ok"], true);
    assert!(history[0]["duration_ms"].is_i64());
    s.cleanup().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_backoff_and_every_attempt_is_recorded() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Receiver::start(|n| if n == 1 { 500 } else { 200 }).await;
    let (endpoint, _) = register(&app, &hook.url, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let pool = quick_pool(&app, None, 3);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'delivered'",
        1,
    )
    .await;

    let event_id = placed_event_id(&app, &order).await;
    let received = hook.received();
    assert_eq!(received.len(), 2);
    for (headers, _) in &received {
        assert_eq!(headers["webhook-id"].to_str().unwrap(), event_id);
    }
    let (delivery, history) = history(&app, &endpoint).await;
    assert_eq!(delivery["attempts"], 2);
    let summary: Vec<(Value, Value, Value)> = history
        .iter()
        .map(|i| {
            (
                i["attempt"].clone(),
                i["status_code"].clone(),
                i["ok"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(2), json!(200), json!(true)),
            (json!(1), json!(500), json!(false)),
        ],
        "newest first"
    );
    assert!(history[1]["error"].as_str().unwrap().contains("500"));
    s.cleanup().await;
}

#[tokio::test]
async fn an_endpoint_that_always_fails_gives_up_its_own_delivery_while_the_others_get_theirs() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let failing = Receiver::start(|_| 503).await;
    let healthy = Receiver::start(|_| 204).await;
    let (failing_id, _) = register(&app, &failing.url, json!(["order.placed"])).await;
    let (healthy_id, _) = register(&app, &healthy.url, json!(["*"])).await;
    // Nothing listens here: a connection error, recorded without a status.
    let (refused_id, _) = register(&app, "http://127.0.0.1:9/hook", json!(["order.*"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let pool = quick_pool(&app, None, 3);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status <> 'pending'",
        4,
    )
    .await;

    // The event was acknowledged once its deliveries were written: nothing dead-lettered.
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM workers.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(letters, 0);
    let event_id = placed_event_id(&app, &order).await;
    assert_eq!(failing.received().len(), 3, "every scheduled attempt");
    let healthy_ids: Vec<String> = healthy
        .received()
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        healthy_ids.len(),
        2,
        "the customer's event and the order's, each once"
    );
    assert_eq!(healthy_ids.iter().filter(|id| **id == event_id).count(), 1);

    let (failed, attempts) = history(&app, &failing_id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["last_status_code"], 503);
    let numbers: Vec<Value> = attempts.iter().map(|i| i["attempt"].clone()).collect();
    assert_eq!(numbers, [json!(3), json!(2), json!(1)]);
    let (refused, attempts) = history(&app, &refused_id).await;
    assert_eq!(refused["status"], "failed");
    assert!(attempts.iter().all(|i| i["status_code"].is_null()
        && i["ok"] == false
        && i["error"].as_str().is_some_and(|e| !e.is_empty())));
    let healthy_items = deliveries(&app, &healthy_id).await;
    assert_eq!(healthy_items.len(), 2);
    assert!(healthy_items.iter().all(|i| i["status"] == "delivered"));

    // Filtered by status; and a failed delivery retried now goes out once more.
    let failed_only = app
        .get(
            Admin,
            &format!("/v1/webhooks/{failing_id}/deliveries?status=failed"),
        )
        .await;
    assert_eq!(failed_only.body["items"].as_array().unwrap().len(), 1);
    let pending = app
        .get(
            Admin,
            &format!("/v1/webhooks/{failing_id}/deliveries?status=pending"),
        )
        .await;
    assert_eq!(pending.body["items"], json!([]));
    app.get(
        Admin,
        &format!("/v1/webhooks/{failing_id}/deliveries?status=lost"),
    )
    .await
    .assert_problem(400, "bad-query");
    let retried = app
        .post(
            Admin,
            &format!(
                "/v1/webhooks/{failing_id}/deliveries/{}/retry",
                failed["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    retried.assert_status(202);
    assert_eq!(retried.body["status"], "pending");
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.deliveries WHERE ok = false AND status_code = 503",
        4,
    )
    .await;
    assert_eq!(failing.received().len(), 4);
    s.cleanup().await;
}

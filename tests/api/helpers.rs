//! `spawn_app()`: the real application on port 0 against a fresh database, with one API key
//! per role and a typed client. The database is dropped when the `TestApp` is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo::{Application, Config, ProcessRole};
use ordo_api::Role;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Wait until `done` holds, at most `within`; fails the test with `what` past it.
pub async fn eventually(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_base() -> String {
    std::env::var("ORDO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The API and the projector, without the process manager: for tests that pin an order's
/// stream versions, which the process manager's `order.payment_status_changed` events would
/// interleave with (tests/api/workers/process_manager.rs covers those).
pub async fn spawn_app_without_process_manager() -> TestApp {
    spawn_app_with(|c| c.roles = vec![ProcessRole::Api, ProcessRole::Projector]).await
}

/// Ordo's migrations before `version`: a database as an older release left it.
pub fn migrations_before(version: i64) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: ordo::MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// Rows of a table read so far, from its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableReads {
    /// Read by sequential scans.
    pub scanned: i64,
    /// Fetched through its indexes.
    pub fetched: i64,
}

/// Rows of `table` (`schema.name`) read so far, asked through `pool`: its connection first
/// hands its own pending statistics to the server (a session keeps them for up to a
/// second), so through a pool of one connection the count includes every statement that
/// pool ran.
pub async fn table_reads(pool: &PgPool, table: &str) -> TableReads {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    let (scanned, fetched) = sqlx::query_as(
        "SELECT coalesce(seq_tup_read, 0), coalesce(idx_tup_fetch, 0)
           FROM pg_stat_user_tables WHERE relid = $1::regclass",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap();
    TableReads { scanned, fetched }
}

/// Rows that sequential scans of `table` have read so far (see [`table_reads`]).
pub async fn rows_scanned(pool: &PgPool, table: &str) -> i64 {
    table_reads(pool, table).await.scanned
}

/// What `read` returns, run on a pool of one connection to `app`'s database, and the rows
/// of `table` it read.
pub async fn reads_of<T>(
    app: &TestApp,
    table: &str,
    read: impl AsyncFnOnce(&PgPool) -> T,
) -> (T, TableReads) {
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.database_url)
        .await
        .unwrap();
    let before = table_reads(&one, table).await;
    let value = read(&one).await;
    let after = table_reads(&one, table).await;
    let reads = TableReads {
        scanned: after.scanned - before.scanned,
        fetched: after.fetched - before.fetched,
    };
    (value, reads)
}

pub fn fresh_database_url() -> String {
    format!("{}/ordo_test_{}", postgres_base(), Uuid::new_v4().simple())
}

pub struct TestApp {
    pub base: String,
    /// `http://addr` of `/metrics`' own listener, when `metrics_addr` is set.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    /// A direct pool on the test database (not through any proxy).
    pub pool: PgPool,
    pub database_url: String,
    keys: HashMap<Role, String>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The application's task: done once every role has stopped.
    running: Option<tokio::task::JoinHandle<()>>,
    /// The highest global position any command answered with.
    last_position: AtomicI64,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {:?}", self))
            .to_owned()
    }

    /// The problem `type` without its `urn:ordo:problem:` prefix.
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:ordo:problem:"))
            .unwrap_or("")
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected response: {:#?}",
            self.body
        );
        self
    }

    /// Asserts an RFC 9457 problem with this status.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, problem: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], json!(status));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_eq!(self.problem(), problem, "problem body: {:#?}", self.body);
        self
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        ordo_runtime::telemetry::init();
    }
    let database_url = fresh_database_url();
    let mut config = Config::defaults();
    config.database_url = database_url.clone().into();
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.db_max_connections = 12;
    // The relay publishes to a shared NATS server; relay tests run it on streams of their own.
    config.roles = vec![
        ProcessRole::Api,
        ProcessRole::Projector,
        ProcessRole::ProcessManager,
    ];
    // Webhook receivers in tests run on 127.0.0.1.
    config.webhook_allow_private = true;
    tweak(&mut config);
    let app = Application::build(&config)
        .await
        .expect("application builds");
    let pool = app.pool().clone();
    start(app, pool, database_url).await
}

/// Start a built application and mint one key per role.
pub async fn start(app: Application, pool: PgPool, database_url: String) -> TestApp {
    let addr = app.local_addr().expect("bound");
    let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
    let (tx, rx) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async {
                let _ = rx.await;
            })
            .await;
    });
    let mut keys = HashMap::new();
    for role in Role::ALL {
        let key = ordo_api::create_key(&pool, role, &format!("test-{role}"))
            .await
            .expect("key created");
        keys.insert(role, key);
    }
    TestApp {
        base: format!("http://{addr}"),
        metrics_base,
        client: reqwest::Client::new(),
        pool,
        database_url,
        keys,
        shutdown: Some(tx),
        running: Some(running),
        last_position: AtomicI64::new(0),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let url = self.database_url.clone();
        // The test's runtime may be gone; drop the database from a runtime of our own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(ordo_commands::db::drop_database(&url));
            }
        })
        .join();
    }
}

pub async fn read(resp: reqwest::Response) -> Resp {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Resp {
        status,
        headers,
        body,
    }
}

impl TestApp {
    /// Shut the application down and wait until every role has stopped (a relay still
    /// running would create again the stream a test is about to delete).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }

    pub fn key(&self, role: Role) -> &str {
        &self.keys[&role]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON as `role`.
    pub async fn post(&self, role: Role, path: &str, body: Value) -> Resp {
        self.post_with(role, path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        role: Role,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .post(self.url(path))
            .bearer_auth(self.key(role))
            .json(&body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = read(req.send().await.expect("request sent")).await;
        if let Some(position) = resp.body.get("position").and_then(Value::as_i64) {
            self.last_position.fetch_max(position, Ordering::SeqCst);
        }
        resp
    }

    /// GET a read model after it has caught up with every command this test sent
    /// (`min_position`, read your writes).
    pub async fn get_fresh(&self, role: Role, path: &str) -> Resp {
        let sep = if path.contains('?') { '&' } else { '?' };
        let position = self.last_position.load(Ordering::SeqCst);
        self.get(role, &format!("{path}{sep}min_position={position}"))
            .await
    }

    /// Remember a position a command answered with, for [`TestApp::get_fresh`].
    pub fn note_position(&self, position: i64) {
        self.last_position.fetch_max(position, Ordering::SeqCst);
    }

    pub fn last_position(&self) -> i64 {
        self.last_position.load(Ordering::SeqCst)
    }

    /// PATCH JSON as `role`.
    pub async fn patch(&self, role: Role, path: &str, body: Value) -> Resp {
        let req = self
            .client
            .patch(self.url(path))
            .bearer_auth(self.key(role));
        read(req.json(&body).send().await.expect("request sent")).await
    }

    pub async fn delete(&self, role: Role, path: &str) -> Resp {
        let req = self
            .client
            .delete(self.url(path))
            .bearer_auth(self.key(role));
        read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, role: Role, path: &str) -> Resp {
        read(
            self.client
                .get(self.url(path))
                .bearer_auth(self.key(role))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    // ---------------------------------------------------------------- fixtures

    pub async fn register_customer(&self) -> String {
        let email = format!("c{}@example.com", Uuid::new_v4().simple());
        self.post(
            Role::Storefront,
            "/v1/customers",
            json!({"email": email, "name": "Ada Lovelace"}),
        )
        .await
        .assert_status(201)
        .id()
    }

    /// An order of 2 × 1250 + 1 × 499 = 2999 EUR.
    pub async fn place_order(&self, customer_id: &str) -> String {
        self.post(Role::Storefront, "/v1/orders", order_body(customer_id))
            .await
            .assert_status(201)
            .id()
    }

    /// Confirm `order` (storefront).
    pub async fn confirm(&self, order: &str) {
        self.command(
            Role::Storefront,
            &format!("/v1/orders/{order}/confirm"),
            json!({}),
        )
        .await;
    }

    /// Ship what is left of `order` (storefront).
    pub async fn ship(&self, order: &str) -> Resp {
        self.command(
            Role::Storefront,
            &format!("/v1/orders/{order}/ship"),
            json!({"carrier": "DHL", "tracking_number": "JD0001"}),
        )
        .await
    }

    /// Mark a shipped `order` delivered (storefront).
    pub async fn deliver(&self, order: &str) -> Resp {
        self.command(
            Role::Storefront,
            &format!("/v1/orders/{order}/deliver"),
            json!({}),
        )
        .await
    }

    /// Cancel `order` for `reason` (support).
    pub async fn cancel(&self, order: &str, reason: &str) -> Resp {
        self.command(
            Role::Support,
            &format!("/v1/orders/{order}/cancel"),
            json!({"reason": reason}),
        )
        .await
    }

    /// Capture `amount` of an authorized `payment` (storefront).
    pub async fn capture(&self, payment: &str, amount: i64) -> Resp {
        self.command(
            Role::Storefront,
            &format!("/v1/payments/{payment}/capture"),
            json!({"amount": amount}),
        )
        .await
    }

    /// Refund `amount` of a captured `payment` for `reason` (storefront).
    pub async fn refund(&self, payment: &str, amount: i64, reason: &str) -> Resp {
        self.command(
            Role::Storefront,
            &format!("/v1/payments/{payment}/refund"),
            json!({"amount": amount, "reason": reason}),
        )
        .await
    }

    /// A command the API must accept (200).
    async fn command(&self, role: Role, path: &str, body: Value) -> Resp {
        let resp = self.post(role, path, body).await;
        resp.assert_status(200);
        resp
    }

    pub async fn confirmed_order(&self) -> String {
        let customer = self.register_customer().await;
        let order = self.place_order(&customer).await;
        self.confirm(&order).await;
        order
    }

    /// A pending payment for `amount` on `order`.
    pub async fn payment(&self, order: &str, amount: i64) -> String {
        self.post(
            Role::Storefront,
            "/v1/payments",
            json!({"order_id": order, "amount": amount, "currency": "EUR", "method": "card"}),
        )
        .await
        .assert_status(201)
        .id()
    }

    pub async fn authorized_payment(&self, order: &str, amount: i64) -> String {
        let payment = self.payment(order, amount).await;
        self.post(
            Role::Storefront,
            &format!("/v1/payments/{payment}/authorize"),
            json!({"provider_reference": "psp-1"}),
        )
        .await
        .assert_status(200);
        payment
    }

    /// A payment for `amount` on `order`, authorized and captured in full.
    pub async fn captured_payment(&self, order: &str, amount: i64) -> String {
        let payment = self.authorized_payment(order, amount).await;
        self.capture(&payment, amount).await;
        payment
    }

    // ------------------------------------------------ chained fixtures (each builds on the last)

    /// A new order of `customer`'s, confirmed and paid in full (one payment of 2999, captured).
    pub async fn paid_order(&self, customer: &str) -> Sale {
        let order = self.place_order(customer).await;
        self.confirm(&order).await;
        let payment = self.captured_payment(&order, 2999).await;
        Sale { order, payment }
    }

    /// A [`TestApp::paid_order`], shipped whole.
    pub async fn shipped_order(&self, customer: &str) -> Sale {
        let sale = self.paid_order(customer).await;
        self.ship(&sale.order).await;
        sale
    }

    /// A [`TestApp::shipped_order`], delivered.
    pub async fn delivered_order(&self, customer: &str) -> Sale {
        let sale = self.shipped_order(customer).await;
        self.deliver(&sale.order).await;
        sale
    }

    /// Some of everything analytics counts: two orders of 2999 by one new customer, the
    /// first confirmed, paid and refunded 500, the second cancelled. Returns both.
    pub async fn paid_and_cancelled_orders(&self) -> (String, String) {
        let customer = self.register_customer().await;
        let paid = self.place_order(&customer).await;
        let cancelled = self.place_order(&customer).await;
        self.confirm(&paid).await;
        let payment = self.captured_payment(&paid, 2999).await;
        self.refund(&payment, 500, "r").await;
        self.cancel(&cancelled, "r").await;
        (paid, cancelled)
    }

    /// The stored sequences of a stream, in order.
    pub async fn sequences(&self, aggregate_type: &str, id: &str) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT sequence FROM event_store.events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("query")
    }

    pub async fn event_types(&self, aggregate_type: &str, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT event_type FROM event_store.events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("query")
    }

    /// Panics unless the hash chain over the whole log verifies.
    pub async fn assert_chain_intact(&self) {
        let chain = ordo_commands::audit::verify(&self.pool, 1, &[], |_| {})
            .await
            .expect("verify the chain");
        assert!(chain.intact(), "{:?}", chain.broken);
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM event_store.events")
            .fetch_one(&self.pool)
            .await
            .expect("query")
    }
}

/// What a chained fixture made: an order and its one payment.
pub struct Sale {
    pub order: String,
    pub payment: String,
}

pub fn order_body(customer_id: &str) -> Value {
    json!({
        "customer_id": customer_id,
        "currency": "EUR",
        "lines": [
            {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": 1250},
            {"sku": "PEN-2", "name": "Pen", "quantity": 1, "unit_price": 499}
        ],
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    })
}

/// A TCP proxy a test can cut and restore, to make PostgreSQL or NATS unreachable for one
/// component without touching the real server.
pub struct TcpProxy {
    pub port: u16,
    cut: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(Mutex::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let upstream = upstream.to_owned();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut2.lock().unwrap() {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, cut, conns }
    }

    /// Refuse new connections and break the open ones.
    pub fn cut(&self) {
        *self.cut.lock().unwrap() = true;
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    pub fn restore(&self) {
        *self.cut.lock().unwrap() = false;
    }
}

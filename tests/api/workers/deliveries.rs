//! Deliveries are isolated: a partner that hangs delays only its own deliveries, no write
//! transaction waits on it, a JetStream redelivery writes no second delivery, and the
//! endpoint lifecycle (auto-disable, enable, secret rotation, test event, update, delete).

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ordo::ProcessRole;
use ordo_api::Role::{Admin, Storefront};
use ordo_workers::integration::{self, sign, DeliveryConfig, DeliveryPool};
use ordo_workers::retry::RetrySchedule;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::helpers::{eventually, reads_of, spawn_app_with, TestApp};
use crate::nats::setup;
use crate::workers::webhooks::{deliveries, placed_event_id, quick_pool, register};
use crate::workers::{rows_read, rows_read_by, worker_status};

/// A TCP listener that accepts connections, reads nothing and never answers: the partner
/// that hangs. Counts the connections it holds.
struct Hanging {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl Hanging {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self { url, accepted }
    }
}

/// A receiver whose answer can be changed while it runs; records what it got.
struct Switchable {
    url: String,
    answer: Arc<AtomicU16>,
    log: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

impl Switchable {
    async fn start(answer: u16) -> Self {
        let answer = Arc::new(AtomicU16::new(answer));
        let log: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
        let (a, l) = (answer.clone(), log.clone());
        let router = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let (a, l) = (a.clone(), l.clone());
                async move {
                    l.lock().unwrap().push((headers, body));
                    StatusCode::from_u16(a.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, answer, log }
    }

    fn received(&self) -> Vec<(HeaderMap, String)> {
        self.log.lock().unwrap().clone()
    }
}

/// Write transactions (those with a transaction id) open for longer than 300 ms in the
/// test's database, other than this query's.
async fn long_write_transactions(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND backend_xid IS NOT NULL AND now() - xact_start > interval '300 milliseconds'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_hanging_endpoint_delays_only_its_own_deliveries_and_holds_no_write_transaction() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hanging = Hanging::start().await;
    let healthy = Switchable::start(200).await;
    let (hanging_id, _) = register(&app, &hanging.url, json!(["*"])).await;
    let (healthy_id, _) = register(&app, &healthy.url, json!(["*"])).await;
    let s = setup(&app).await;
    let (stop, stopped) = watch::channel(false);
    let runner = s.worker(&app).await;
    let worker = tokio::spawn(runner.run(stopped.clone()));
    let pool = DeliveryPool::new(
        app.pool.clone(),
        integration::client_with(None, true).unwrap(),
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            poll: Duration::from_millis(20),
            ..DeliveryConfig::default()
        },
    );
    let deliveries_task = tokio::spawn(pool.run(stopped));

    let customer = app.register_customer().await;
    for _ in 0..3 {
        app.place_order(&customer).await;
    }
    let events = app.event_count().await;
    s.publish_all(&app).await;

    // The healthy endpoint gets every event while the hanging one holds its requests.
    eventually(
        Duration::from_secs(4),
        "every event at the healthy endpoint",
        async || healthy.received().len() as i64 == events,
    )
    .await;
    eventually(
        Duration::from_secs(4),
        "the hanging endpoint holds requests",
        async || hanging.accepted.load(Ordering::SeqCst) > 0,
    )
    .await;
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integration.outbox WHERE endpoint_id = $1::uuid
            AND status = 'pending' AND leased_until > now()",
    )
    .bind(&hanging_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        in_flight > 0,
        "the hanging endpoint's requests are still open"
    );
    // While they hang, no transaction that has written anything stays open.
    for _ in 0..10 {
        assert_eq!(long_write_transactions(&app).await, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy_items = deliveries(&app, &healthy_id).await;
    assert!(healthy_items.iter().all(|i| i["status"] == "delivered"));
    // At most four requests at once to one endpoint: the others wait in its own queue.
    assert!(hanging.accepted.load(Ordering::SeqCst) <= 4);
    let shown = app.get(Admin, &format!("/v1/webhooks/{hanging_id}")).await;
    assert_eq!(shown.body["pending"], json!(events));

    let _ = stop.send(true);
    let _ = worker.await;
    deliveries_task.abort();
    s.cleanup().await;
}

#[tokio::test]
async fn a_jetstream_redelivery_during_a_slow_delivery_writes_no_second_delivery() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hanging = Hanging::start().await;
    let (endpoint, _) = register(&app, &hanging.url, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner = s.worker(&app).await;
    crate::nats::redeliver_all(&runner, 2).await;
    let pool = quick_pool(&app, None, 3);
    let (stop, stopped) = watch::channel(false);
    let sending = tokio::spawn(pool.run(stopped));
    eventually(
        Duration::from_secs(5),
        "the slow request open",
        async || hanging.accepted.load(Ordering::SeqCst) > 0,
    )
    .await;

    // The same event again, as JetStream redelivers it (a new message id), and once more
    // after its processed record is gone (a replay that repeats effects).
    let event_id = placed_event_id(&app, &order).await;
    let again = ordo_commands::feed::read_batch(
        &mut app.pool.acquire().await.unwrap(),
        Default::default(),
        100,
    )
    .await
    .unwrap()
    .into_iter()
    .find(|e| e.event_id.to_string() == event_id)
    .unwrap();
    for forget in [false, true] {
        if forget {
            sqlx::query("DELETE FROM integration.processed WHERE event_id = $1::uuid")
                .bind(&event_id)
                .execute(&app.pool)
                .await
                .unwrap();
        }
        let mut headers = ordo_workers::relay::headers(&again);
        headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
        s.js.publish_with_headers(
            format!("{}.order.placed", s.relay_config.subject_prefix),
            headers,
            ordo_workers::relay::body(&again).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        crate::nats::redeliver_all(&runner, 1).await;
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integration.outbox WHERE endpoint_id = $1::uuid AND event_id = $2::uuid",
    )
    .bind(&endpoint)
    .bind(&event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    let _ = stop.send(true);
    sending.abort();
    s.cleanup().await;
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled_and_an_admin_enables_it_again() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Switchable::start(500).await;
    let (endpoint, _) = register(&app, &hook.url, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    app.place_order(&customer).await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let pool = DeliveryPool::new(
        app.pool.clone(),
        integration::client_with(None, true).unwrap(),
        DeliveryConfig {
            timeout: Duration::from_secs(2),
            poll: Duration::from_millis(20),
            schedule: RetrySchedule::quick(Duration::from_millis(50), 1000),
            disable_after: Duration::from_millis(300),
            ..DeliveryConfig::default()
        },
    );
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.endpoints WHERE disabled_at IS NOT NULL",
        1,
    )
    .await;

    let shown = app.get(Admin, &format!("/v1/webhooks/{endpoint}")).await;
    assert_eq!(shown.body["state"], "disabled");
    assert_eq!(shown.body["disabled_reason"], "auto");
    assert_eq!(shown.body["pending"], 1, "its delivery waits");
    let tries = hook.received().len();
    assert!(tries >= 2, "{tries}");
    // Disabled: nothing is sent, however often the pool looks.
    for _ in 0..5 {
        pool.step().await.unwrap();
    }
    assert_eq!(hook.received().len(), tries);

    hook.answer.store(200, Ordering::SeqCst);
    let enabled = app
        .post(Admin, &format!("/v1/webhooks/{endpoint}/enable"), json!({}))
        .await;
    enabled.assert_status(200);
    assert_eq!(enabled.body["state"], "active");
    assert!(enabled.body["disabled_reason"].is_null());
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'delivered'",
        1,
    )
    .await;
    let shown = app.get(Admin, &format!("/v1/webhooks/{endpoint}")).await;
    assert_eq!(shown.body["state"], "active");
    assert_eq!(shown.body["delivered"], 1);

    // A manual disable is recorded as such.
    let disabled = app
        .post(
            Admin,
            &format!("/v1/webhooks/{endpoint}/disable"),
            json!({}),
        )
        .await;
    assert_eq!(disabled.body["state"], "disabled");
    assert_eq!(disabled.body["disabled_reason"], "manual");
    s.cleanup().await;
}

#[tokio::test]
async fn after_a_rotation_deliveries_carry_both_signatures_and_a_test_event_reaches_any_endpoint() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Switchable::start(200).await;
    // Subscribed to one type only: the test event goes out all the same.
    let (endpoint, old) = register(&app, &hook.url, json!(["payment.refunded"])).await;
    let rotated = app
        .post(
            Admin,
            &format!("/v1/webhooks/{endpoint}/rotate-secret"),
            json!({}),
        )
        .await;
    rotated.assert_status(200);
    let new = rotated.body["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let shown = app.get(Admin, &format!("/v1/webhooks/{endpoint}")).await;
    assert!(shown.body["previous_secret_until"].is_string());
    assert!(shown.body.get("secret").is_none(), "never shown again");

    let queued = app
        .post(Admin, &format!("/v1/webhooks/{endpoint}/test"), json!({}))
        .await;
    queued.assert_status(202);
    assert_eq!(queued.body["event_type"], "webhook.test");
    let pool = quick_pool(&app, None, 3);
    eventually(
        Duration::from_secs(10),
        "the test event delivered",
        async || {
            pool.step().await.unwrap();
            !hook.received().is_empty()
        },
    )
    .await;

    let (headers, body) = &hook.received()[0];
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let id = header("webhook-id");
    assert_eq!(json!(id), queued.body["event_id"]);
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    let signatures: Vec<String> = header("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(
        signatures,
        [
            sign(&new, &id, timestamp, body).unwrap(),
            sign(&old, &id, timestamp, body).unwrap()
        ]
    );
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "webhook.test");
    app.post(
        Admin,
        &format!("/v1/webhooks/{}/test", uuid::Uuid::new_v4()),
        json!({}),
    )
    .await
    .assert_problem(404, "not-found");
}

#[tokio::test]
async fn endpoints_are_listed_shown_updated_and_deleted_by_admins_only() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let created = app
        .post(
            Admin,
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/a", "event_types": ["order.*"], "description": "ERP"}),
        )
        .await;
    created.assert_status(201);
    let id = created.id();
    app.get(Storefront, "/v1/webhooks")
        .await
        .assert_problem(403, "forbidden");
    let listed = app.get(Admin, "/v1/webhooks").await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["description"], "ERP");
    assert_eq!(items[0]["state"], "active");
    assert_eq!(items[0]["pending"], 0);

    let patched = app
        .patch(
            Admin,
            &format!("/v1/webhooks/{id}"),
            json!({"url": "http://127.0.0.1:9/b", "event_types": ["*"], "description": null}),
        )
        .await;
    patched.assert_status(200);
    assert_eq!(patched.body["url"], "http://127.0.0.1:9/b");
    assert_eq!(patched.body["event_types"], json!(["*"]));
    assert!(patched.body["description"].is_null());
    let bad = app
        .patch(
            Admin,
            &format!("/v1/webhooks/{id}"),
            json!({"event_types": [], "url": "x"}),
        )
        .await;
    bad.assert_problem(422, "validation");
    app.patch(
        Admin,
        &format!("/v1/webhooks/{}", uuid::Uuid::new_v4()),
        json!({"description": "x"}),
    )
    .await
    .assert_problem(404, "not-found");

    app.delete(Admin, &format!("/v1/webhooks/{id}"))
        .await
        .assert_status(204);
    app.get(Admin, &format!("/v1/webhooks/{id}"))
        .await
        .assert_problem(404, "not-found");
    app.delete(Admin, &format!("/v1/webhooks/{id}"))
        .await
        .assert_problem(404, "not-found");
}

/// `ordo webhooks ARGS…` against the test's database: its stdout, or a failed test.
fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("webhooks")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("ORDO_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_disables_enables_rotates_and_queues_a_test_like_the_api() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (id, old) = register(&app, "http://127.0.0.1:9/cli", json!(["order.placed"])).await;
    let (ok, listed) = cli(&app, &["list"]);
    assert!(
        ok && listed.contains(&id) && listed.contains("active"),
        "{listed}"
    );
    let (ok, shown) = cli(&app, &["disable", &id]);
    assert!(ok, "{shown}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], "disabled");
    assert_eq!(shown["disabled_reason"], "manual");
    let (ok, shown) = cli(&app, &["enable", &id]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&shown).unwrap()["state"],
        "active"
    );
    let (ok, secret) = cli(&app, &["rotate-secret", &id]);
    assert!(ok && secret.trim().starts_with("whsec_") && secret.trim() != old);
    let (ok, queued) = cli(&app, &["test", &id]);
    assert!(ok, "{queued}");
    let (ok, listed) = cli(&app, &["deliveries", &id, "--status", "pending"]);
    assert!(ok && listed.contains("webhook.test"), "{listed}");
    let (ok, _) = cli(&app, &["deliveries", &id, "--status", "lost"]);
    assert!(!ok);
    let (ok, _) = cli(&app, &["show", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok, "an unknown id fails");
}

/// Delivery history past its retention goes, in bounded batches: delivered webhooks with
/// their attempts, and sent e-mails' attempts. Pending and failed deliveries, recent history
/// and the notifications themselves stay.
#[tokio::test]
async fn history_past_its_retention_is_purged_in_batches_and_nothing_else_is() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (endpoint, _) = register(&app, "http://127.0.0.1:9/hook", json!(["*"])).await;
    let endpoint = uuid::Uuid::parse_str(&endpoint).unwrap();
    let days_ago = |d: i64| chrono::Utc::now() - chrono::TimeDelta::days(d);
    // (status, delivered or created this many days ago)
    let rows = [
        ("delivered", 40),
        ("delivered", 35),
        ("delivered", 31),
        ("delivered", 2),
        ("pending", 40),
        ("failed", 40),
    ];
    let mut ids = Vec::new();
    for (i, (status, age)) in rows.iter().enumerate() {
        let id = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                    position, body, status, created_at, delivered_at)
             VALUES ($1, $2, $3, 'order.placed', 'o', $4, '{}', $5, $6,
                     CASE WHEN $5 = 'delivered' THEN $6 END)",
        )
        .bind(id)
        .bind(endpoint)
        .bind(uuid::Uuid::new_v4())
        .bind(i as i64)
        .bind(status)
        .bind(days_ago(*age))
        .execute(&app.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO integration.deliveries (id, endpoint_id, event_id, attempt, ok,
                    created_at, delivery_id)
             VALUES ($1, $2, $3, 1, true, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(endpoint)
        .bind(uuid::Uuid::new_v4())
        .bind(days_ago(*age))
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    for (status, age) in [("sent", 40), ("sent", 2), ("failed", 40)] {
        let notification = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO notification.notifications (id, event_id, kind, status, created_at)
             VALUES ($1, $2, 'order_placed', $3, $4)",
        )
        .bind(notification)
        .bind(uuid::Uuid::new_v4())
        .bind(status)
        .bind(days_ago(age))
        .execute(&app.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO notification.attempts (id, notification_id, attempt, ok, created_at)
             VALUES ($1, $2, 1, $3, $4)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(notification)
        .bind(status == "sent")
        .bind(days_ago(age))
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // Batches of two: the three old delivered webhooks take two statements.
    let purged = ordo_workers::retention::purge(&app.pool, days_ago(30), 2)
        .await
        .unwrap();
    assert_eq!(purged.webhooks, 3);
    assert_eq!(purged.mail_attempts, 1);

    let left: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM integration.outbox ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, ids[3..].to_vec(), "recent, pending and failed stay");
    let attempts: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT delivery_id FROM integration.deliveries ORDER BY created_at DESC",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| ids[3..].contains(a)));
    let (notifications, mail_attempts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notification.notifications),
                (SELECT count(*) FROM notification.attempts)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((notifications, mail_attempts), (3, 2));

    let again = ordo_workers::retention::purge(&app.pool, days_ago(30), 2)
        .await
        .unwrap();
    assert_eq!(again, ordo_workers::retention::Purged::default());
}

/// An endpoint's pending, delivered and failed counts are kept as deliveries change, through
/// every path that changes them (written, recorded, written settled, due again, purged,
/// deleted with the endpoint), so that showing an endpoint or the workers reads neither the
/// backlog nor the deliveries kept for the retention window: only the oldest pending one.
#[tokio::test]
async fn webhook_counts_are_kept_as_deliveries_change_and_read_only_the_oldest_pending_delivery() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (busy, _) = register(&app, "http://127.0.0.1:9/busy", json!(["*"])).await;
    let (quiet, _) = register(&app, "http://127.0.0.1:9/quiet", json!(["*"])).await;
    let (gone, _) = register(&app, "http://127.0.0.1:9/gone", json!(["*"])).await;
    let run = async |sql: &str, endpoint: &str| {
        sqlx::query(sql)
            .bind(uuid::Uuid::parse_str(endpoint).unwrap())
            .execute(&app.pool)
            .await
            .unwrap();
    };
    let write = |n: u32, status: &str| {
        format!(
            "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                    position, body, status)
             SELECT gen_random_uuid(), $1, gen_random_uuid(), 'order.placed', 'o', g, '{{}}',
                    '{status}'
               FROM generate_series(1, {n}) g"
        )
    };
    let settle = |n: u32, from: &str, to: &str| {
        format!(
            "UPDATE integration.outbox SET status = '{to}'
              WHERE id IN (SELECT id FROM integration.outbox
                            WHERE endpoint_id = $1 AND status = '{from}' ORDER BY id LIMIT {n})"
        )
    };
    // The worker writes 3,000 deliveries; the pool records 2,990 delivered and three failed.
    run(&write(3000, "pending"), &busy).await;
    run(&settle(2990, "pending", "delivered"), &busy).await;
    run(&settle(3, "pending", "failed"), &busy).await;
    // A replay that repeats effects makes five due again; the purge deletes ten.
    run(&settle(5, "delivered", "pending"), &busy).await;
    run(
        "DELETE FROM integration.outbox WHERE id IN (SELECT id FROM integration.outbox
          WHERE endpoint_id = $1 AND status = 'delivered' ORDER BY id LIMIT 10)",
        &busy,
    )
    .await;
    // Settled rows written as such (as the retention test does), and an endpoint deleted
    // with its deliveries.
    run(&write(2, "delivered"), &quiet).await;
    run(&write(4, "delivered"), &gone).await;
    app.delete(Admin, &format!("/v1/webhooks/{gone}"))
        .await
        .assert_status(204);

    let shown = app.get(Admin, &format!("/v1/webhooks/{busy}")).await;
    assert_eq!(
        (
            &shown.body["pending"],
            &shown.body["delivered"],
            &shown.body["failed"]
        ),
        (&json!(12), &json!(2975), &json!(3)),
        "{}",
        shown.body
    );
    let shown = app.get(Admin, &format!("/v1/webhooks/{quiet}")).await;
    assert_eq!(
        (&shown.body["pending"], &shown.body["delivered"]),
        (&json!(0), &json!(2))
    );
    let outbox = worker_status(&app, "integration").await["outbox"].clone();
    assert_eq!(
        (&outbox["pending"], &outbox["done"], &outbox["failed"]),
        (&json!(12), &json!(2977), &json!(3)),
        "{outbox}"
    );

    sqlx::query("ANALYZE integration.outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    let explained: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {} WHERE e.id = $1",
        integration::endpoints::VIEW
    ))
    .bind(uuid::Uuid::parse_str(&busy).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let read = rows_read(&explained[0]["Plan"], "outbox");
    assert!(
        read <= 1.0,
        "showing an endpoint read {read} of its 2,990 deliveries, 12 of them pending: {explained}"
    );
    // Every endpoint, as the workers' page and the pool's gauges read them: the oldest
    // pending delivery of each, no more.
    let (read, explained) = rows_read_by(&app.pool, integration::endpoints::VIEW, "outbox").await;
    assert!(
        read <= 1.0,
        "showing every endpoint read {read} deliveries, 12 of them pending: {explained}"
    );
}

#[tokio::test]
async fn a_claim_reads_a_handful_of_rows_whatever_the_backlog_behind_it() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (stuck, _) = register(&app, "http://127.0.0.1:9/stuck", json!(["*"])).await;
    let (healthy, _) = register(&app, "http://127.0.0.1:9/healthy", json!(["*"])).await;
    let claim = include_str!("../../../workers/src/integration/claim.sql");
    // The outbox's statistics are those of an empty table, as when a backlog builds up
    // faster than autovacuum analyzes it.
    sqlx::query("ANALYZE integration.outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    // 10,000 deliveries pending at one endpoint: 2,000 aggregates of five events each, every
    // aggregate's first one failing and waiting for its retry in an hour, the four behind it
    // due no sooner (as the integration worker writes them and a retry pushes them back);
    // and three due at the other endpoint.
    sqlx::query(
        "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                position, body, next_attempt_at, attempts)
         SELECT gen_random_uuid(), $1::uuid, gen_random_uuid(), 'order.placed', 'o' || (g / 5),
                g, '{}'::jsonb, now() + interval '1 hour',
                CASE WHEN g % 5 = 0 THEN 1 ELSE 0 END
           FROM generate_series(0, 9999) g
         UNION ALL
         SELECT gen_random_uuid(), $2::uuid, gen_random_uuid(), 'order.placed', 'h' || g, g,
                '{}'::jsonb, now(), 0
           FROM generate_series(1, 3) g",
    )
    .bind(&stuck)
    .bind(&healthy)
    .execute(&app.pool)
    .await
    .unwrap();

    // Planned for its parameters, as the pool runs it (unprepared). A generic plan kept
    // from an empty outbox reads the whole backlog (60,000 rows here): that is why the
    // pool never prepares it.
    for (endpoint, expected) in [(&healthy, 3), (&stuck, 0)] {
        let mut tx = ordo_commands::db::begin(&app.pool).await.unwrap();
        let explained: Value =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {claim}"))
                .persistent(false)
                .bind(uuid::Uuid::parse_str(endpoint).unwrap())
                .bind(32_i64)
                .bind(4_i64)
                .bind(40.0_f64)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        tx.rollback().await.unwrap();
        let plan = &explained[0]["Plan"];
        assert_eq!(plan["Actual Rows"], json!(expected), "{explained}");
        let read = rows_read(plan, "outbox");
        assert!(
            read < 100.0,
            "the claim for {endpoint} read {read} outbox rows of a 10,003-row backlog: {explained}"
        );
    }
}

#[tokio::test]
async fn looking_for_due_endpoints_reads_a_handful_of_rows_whatever_the_backlog() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (stuck, _) = register(&app, "http://127.0.0.1:9/stuck", json!(["*"])).await;
    // A webhook endpoint that never answers: 10,000 deliveries due, the oldest three leased
    // to the requests hanging there.
    sqlx::query(
        "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                position, body, next_attempt_at, leased_until)
         SELECT gen_random_uuid(), $1::uuid, gen_random_uuid(), 'order.placed', 'o' || g, g,
                '{}'::jsonb, now() - interval '1 minute' + g * interval '1 millisecond',
                CASE WHEN g <= 3 THEN now() + interval '10 seconds' END
           FROM generate_series(1, 10000) g",
    )
    .bind(&stuck)
    .execute(&app.pool)
    .await
    .unwrap();

    // Before any statistics of the backlog, and after an analyze of the outbox
    // (the endpoints, a few rows that seldom change, may never be analyzed: with that, the
    // `EXISTS` this replaced read the whole backlog).
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE integration.outbox")
                .execute(&app.pool)
                .await
                .unwrap();
        }
        let due: Vec<uuid::Uuid> = sqlx::query_scalar(integration::pool::DUE_ENDPOINTS)
            .fetch_all(&app.pool)
            .await
            .unwrap();
        assert_eq!(due, [uuid::Uuid::parse_str(&stuck).unwrap()]);
        let (read, explained) =
            rows_read_by(&app.pool, integration::pool::DUE_ENDPOINTS, "outbox").await;
        assert!(
            read < 100.0,
            "analyzed: {analyzed}; looking for due endpoints read {read} outbox rows of a 10,000-row backlog: {explained}"
        );
    }
}

/// What the delivery pool's statistics task does every tick: analyze the outbox when its
/// statistics are missing or far behind it.
async fn analyze_outbox(app: &TestApp) -> Result<bool, sqlx::Error> {
    ordo_commands::db::analyze_if_behind(&app.pool, "integration.outbox").await
}

/// `n` deliveries pending at a new endpoint (due in an hour), written faster than autovacuum
/// first analyzes the outbox: the planner has no statistics of them at all, and the
/// statistics' counters already hold them. Returns the endpoint's id.
async fn unanalyzed_backlog(app: &TestApp, n: i32) -> uuid::Uuid {
    let (stuck, _) = register(app, "http://127.0.0.1:9/stuck", json!(["*"])).await;
    let stuck = uuid::Uuid::parse_str(&stuck).unwrap();
    let mut writer = app.pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                position, body, next_attempt_at)
         SELECT gen_random_uuid(), $1, gen_random_uuid(), 'order.placed', 'o' || g, g,
                '{}'::jsonb, now() + interval '1 hour'
           FROM generate_series(1, $2) g",
    )
    .bind(stuck)
    .bind(n)
    .execute(&mut *writer)
    .await
    .unwrap();
    // A session reports its changes to the statistics a second or more later; this one
    // reports them when its next statement ends.
    for statement in ["SELECT pg_stat_force_next_flush()", "SELECT 1"] {
        sqlx::query(statement).execute(&mut *writer).await.unwrap();
    }
    stuck
}

#[tokio::test]
async fn the_outbox_write_reads_a_handful_of_rows_before_and_after_the_pool_analyzes_a_backlog_it_had_never_seen(
) {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let stuck = unanalyzed_backlog(&app, 10_000).await;

    // The integration worker's write of 300 new deliveries at that endpoint: one probe of
    // the aggregate's pending deliveries each, not a walk through the endpoint's backlog
    // (which read 1,826 rows per delivery from a backlog of 5,477 in the benchmark, and
    // 40,000 per delivery from 40,000 before any statistics).
    let rows_read_by_a_write = || async {
        let n = 300;
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let events: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let aggregates: Vec<String> = (0..n).map(|i| format!("new-{i}")).collect();
        let positions: Vec<i64> = (0..n).map(|i| 20_000 + i64::from(i)).collect();
        let bodies: Vec<Value> = (0..n).map(|_| json!({})).collect();
        let mut tx = ordo_commands::db::begin(&app.pool).await.unwrap();
        let explained: Value = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) {}",
            integration::outbox::WRITE
        ))
        .bind(&ids)
        .bind(vec![stuck; ids.len()])
        .bind(&events)
        .bind(vec!["order.placed".to_string(); ids.len()])
        .bind(&aggregates)
        .bind(&positions)
        .bind(&bodies)
        .bind(vec![None::<String>; ids.len()])
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        (rows_read(&explained[0]["Plan"], "outbox"), explained)
    };
    let (read, explained) = rows_read_by_a_write().await;
    assert!(
        read < 100.0,
        "with no statistics, writing 300 deliveries read {read} outbox rows of a 10,000-row backlog: {explained}"
    );

    assert!(
        analyze_outbox(&app).await.unwrap(),
        "an outbox with no statistics is analyzed"
    );
    assert!(
        !analyze_outbox(&app).await.unwrap(),
        "and not again while its statistics are current"
    );
    let (read, explained) = rows_read_by_a_write().await;
    assert!(
        read < 100.0,
        "analyzed, writing 300 deliveries read {read} outbox rows of a 10,000-row backlog: {explained}"
    );
}

#[tokio::test]
async fn analyzing_the_outboxes_describes_the_columns_queries_filter_on_and_skips_the_wide_ones() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    unanalyzed_backlog(&app, 2_000).await;
    sqlx::query(
        "INSERT INTO notification.notifications
                (id, event_id, kind, order_id, customer_id, recipient, subject, body, status,
                 error)
         SELECT gen_random_uuid(), gen_random_uuid(), 'order_placed', gen_random_uuid(),
                gen_random_uuid(), 'c' || g || '@example.com', 'Your order ' || g,
                repeat('A line of the order. ', 20), 'pending', 'refused ' || g
           FROM generate_series(1, 2000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(
        analyze_outbox(&app).await.unwrap(),
        "the pool's analyze ran"
    );
    sqlx::query("ANALYZE notification.notifications")
        .execute(&app.pool)
        .await
        .unwrap();

    // The columns the claims, writes, records and gauges filter on keep their statistics.
    let tables: [(&str, &[&str], &[&str]); 2] = [
        (
            "integration.outbox",
            &[
                "endpoint_id",
                "status",
                "aggregate_id",
                "position",
                "next_attempt_at",
            ],
            &["body", "traceparent", "last_error"],
        ),
        (
            "notification.notifications",
            &["status", "order_id", "customer_id", "created_at"],
            &["body", "subject", "recipient", "error"],
        ),
    ];
    for (table, filtered, wide) in tables {
        let described: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_stats WHERE schemaname || '.' || tablename = $1",
        )
        .bind(table)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        for column in filtered {
            assert!(
                described.iter().any(|c| c == column),
                "{table}.{column} has statistics: {described:?}"
            );
        }
        for column in wide {
            assert!(
                !described.iter().any(|c| c == column),
                "{table}.{column} has none: {described:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_analyze_is_skipped_while_another_session_holds_the_outbox_and_runs_once_it_is_free() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    unanalyzed_backlog(&app, 2_000).await;

    // Another session holds the outbox as a vacuum, or another process's analyze, does. An
    // analyze that queued behind it would hold the pool's statistics task and a connection
    // until it let go.
    let mut holder = ordo_commands::db::begin(&app.pool).await.unwrap();
    sqlx::query("LOCK TABLE integration.outbox IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let analyzed = tokio::time::timeout(Duration::from_secs(30), analyze_outbox(&app))
        .await
        .expect("the analyze waited for the session holding the outbox instead of giving up")
        .unwrap();
    assert!(
        !analyzed,
        "the analyze is skipped while another session holds the outbox"
    );
    let never: Option<i64> = sqlx::query_scalar(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'integration.outbox'::regclass",
    )
    .fetch_optional(&app.pool)
    .await
    .unwrap();
    assert_eq!(never, Some(0), "nothing analyzed the outbox meanwhile");

    holder.rollback().await.unwrap();
    assert!(
        analyze_outbox(&app).await.unwrap(),
        "once the outbox is free, the next call analyzes it"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_probed_one_request_at_a_time_with_nothing_leased_ahead() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hanging = Hanging::start().await;
    let (endpoint, _) = register(&app, &hanging.url, json!(["*"])).await;
    let endpoint = uuid::Uuid::parse_str(&endpoint).unwrap();
    // The endpoint failed before, and six deliveries are due at it.
    sqlx::query("UPDATE integration.endpoints SET failing_since = now() WHERE id = $1")
        .bind(endpoint)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                position, body)
         SELECT gen_random_uuid(), $1, gen_random_uuid(), 'order.placed', 'o' || g, g, '{}'
           FROM generate_series(1, 6) g",
    )
    .bind(endpoint)
    .execute(&app.pool)
    .await
    .unwrap();
    let pool = DeliveryPool::new(
        app.pool.clone(),
        integration::client_with(None, true).unwrap(),
        DeliveryConfig {
            timeout: Duration::from_millis(500),
            per_endpoint: 4,
            poll: Duration::from_millis(20),
            schedule: RetrySchedule::quick(Duration::from_secs(60), 3),
            ..DeliveryConfig::default()
        },
    );
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(pool.run(stopped));

    // Until three probes have timed out one after another, never more than one of its
    // deliveries is leased (a healthy endpoint gets eight: two rounds of four).
    let mut most_leased = 0;
    eventually(
        Duration::from_secs(20),
        "three probes of the hanging endpoint recorded",
        async || {
            let (leased, attempts): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM integration.outbox
                          WHERE endpoint_id = $1 AND leased_until > now()),
                        (SELECT count(*) FROM integration.deliveries WHERE endpoint_id = $1)",
            )
            .bind(endpoint)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            most_leased = most_leased.max(leased);
            attempts >= 3
        },
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(
        most_leased, 1,
        "deliveries leased at once at a failing endpoint"
    );
    assert!(hanging.accepted.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn an_endpoints_deliveries_of_every_status_are_its_newest_and_read_about_a_page_per_status() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (endpoint, _) = register(&app, "http://127.0.0.1:9/history", json!(["*"])).await;
    let endpoint_id = uuid::Uuid::parse_str(&endpoint).unwrap();
    // 6,000 deliveries, most of them delivered, a tenth failed and a tenth pending; four at a
    // time share their time, so that the order between them is the ids'.
    sqlx::query(
        "INSERT INTO integration.outbox (id, endpoint_id, event_id, event_type, aggregate_id,
                position, body, status, next_attempt_at, created_at, delivered_at)
         SELECT gen_random_uuid(), $1, gen_random_uuid(), 'order.placed', 'o' || g, g, '{}',
                CASE g % 10 WHEN 0 THEN 'failed' WHEN 1 THEN 'pending' ELSE 'delivered' END,
                now() + interval '1 hour', now() - make_interval(secs => g / 4),
                CASE WHEN g % 10 > 1 THEN now() END
           FROM generate_series(1, 6000) g",
    )
    .bind(endpoint_id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE integration.outbox")
        .execute(&app.pool)
        .await
        .unwrap();

    // Listed as a sort of the endpoint's whole outbox orders them, with a status or without.
    let sorted = |status: Option<&'static str>| {
        sqlx::query_scalar::<_, String>(
            "SELECT id::text FROM integration.outbox
              WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)
              ORDER BY created_at DESC, id DESC LIMIT 50",
        )
        .bind(endpoint_id)
        .bind(status)
        .fetch_all(&app.pool)
    };
    for (query, status) in [("", None), ("?status=failed", Some("failed"))] {
        let listed = app
            .get(Admin, &format!("/v1/webhooks/{endpoint}/deliveries{query}"))
            .await;
        listed.assert_status(200);
        let ids: Vec<&str> = listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, sorted(status).await.unwrap(), "{query}");
    }

    // Every status's newest through its own index, never by scanning the outbox ...
    let (listed, reads) = reads_of(&app, "integration.outbox", async |one| {
        integration::outbox::deliveries(one, endpoint_id, None, 50)
            .await
            .unwrap()
            .unwrap()
    })
    .await;
    assert_eq!(listed.items.len(), 50);
    assert_eq!(
        reads.scanned, 0,
        "the deliveries of every status scanned the outbox"
    );
    // ... about 50 rows each, not the 6,000.
    let explained: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        integration::outbox::EVERY_STATUS.as_str()
    ))
    .bind(endpoint_id)
    .bind(50_i64)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let read = rows_read(&explained[0]["Plan"], "outbox");
    assert!(
        read <= 200.0,
        "the newest 50 deliveries of an endpoint read {read} of its 6,000: {explained}"
    );
}

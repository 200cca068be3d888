//! Erasure end to end (ADR 0020): a customer with orders, payments, notes, e-mails and
//! webhook deliveries is erased; then no clear text of theirs is left in history, state,
//! read models (also after a full rebuild), the JetStream stream's stored messages, the
//! workers' tables or the captured logs, and the hash chain still verifies.

use std::time::Duration;

use ordo::{ProcessRole, Secret};
use ordo_api::Role::{Admin, Support};
use ordo_commands::privacy::{Keyring, MasterKey, MasterKeys};
use ordo_workers::integration::Integration;
use ordo_workers::notification::{Mailer, Notification};
use ordo_workers::WorkerRunner;
use serde_json::{json, Value};

use crate::audit::privacy::{
    assert_chain_intact, customer_with_personal_data, leaked, stored_payloads, EMAIL, MASTER_KEY,
    NAME,
};
use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::{setup, Setup};
use crate::read_models::rebuilds::wait_until_rebuilt;
use crate::workers::analytics_rebuild;
use crate::workers::notifications::{quick_sender_with_keys, Notifier, SmtpSink};
use crate::workers::trace_context::capture_logs;
use crate::workers::webhooks::{quick_pool, Receiver};

fn keys(app: &TestApp) -> Keyring {
    let master = MasterKeys::new(MasterKey::parse(1, MASTER_KEY).unwrap(), Vec::new()).unwrap();
    Keyring::new(app.pool.clone(), Some(master))
}

/// Every row of the read models and the workers' tables that may hold personal data, as
/// text (`outbox`: the webhook outbox's too).
async fn worker_and_read_model_rows(app: &TestApp, outbox: bool) -> String {
    let tables: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) FROM projections.customers t
         UNION ALL SELECT to_jsonb(t) FROM projections.orders t
         UNION ALL SELECT to_jsonb(t) FROM notification.customers t
         UNION ALL SELECT to_jsonb(t) FROM notification.notifications t
         UNION ALL SELECT to_jsonb(t) FROM notification.attempts t
         UNION ALL SELECT to_jsonb(t) FROM integration.outbox t WHERE $1",
    )
    .bind(outbox)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    Value::from(tables).to_string()
}

/// Every message stored on the stream, body and headers, as text.
async fn stream_contents(s: &Setup) -> String {
    let stream = s.js.get_stream(&s.relay_config.stream).await.unwrap();
    let last = stream.clone().info().await.unwrap().state.last_sequence;
    let mut all = String::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            all.push_str(&String::from_utf8_lossy(&message.payload));
            all.push_str(&format!("{:?}", message.headers));
        }
    }
    all
}

/// Relay and step both workers (and the mail sender and delivery pool) until each has
/// processed every event of the log, including those the process manager appends
/// meanwhile (a cancelled order's payment is voided or refunded after the cancel answered).
async fn work_all(
    app: &TestApp,
    s: &Setup,
    notifier: &Notifier,
    integration: &WorkerRunner,
    deliveries: &ordo_workers::integration::DeliveryPool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        s.publish_all(app).await;
        let events = app.event_count().await;
        let (mailed, hooked): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM notification.processed),
                    (SELECT count(*) FROM integration.processed)",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM notification.notifications WHERE status = 'pending')
                  + (SELECT count(*) FROM integration.outbox WHERE status = 'pending')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if mailed >= events && hooked >= events && waiting == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers behind: {mailed}/{hooked} of {events}, {waiting} waiting"
        );
        notifier
            .runner
            .step(50, Duration::from_millis(50))
            .await
            .unwrap();
        integration
            .step(50, Duration::from_millis(50))
            .await
            .unwrap();
        if let Some(sender) = &notifier.sender {
            sender.step().await.unwrap();
        }
        deliveries.step().await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_erased_customer_leaves_no_clear_text_anywhere_and_the_chain_still_verifies() {
    let (capture, _guard) = capture_logs("debug,reqwest=info,hyper=info,hyper_util=info");

    // Arrange: the API, projector and process manager; the relay and workers stepped here.
    let app = spawn_app_with(|c| {
        c.master_key = Some(Secret::new(MASTER_KEY));
        c.roles = vec![
            ProcessRole::Api,
            ProcessRole::Projector,
            ProcessRole::ProcessManager,
        ];
    })
    .await;
    let sink = SmtpSink::start().await;
    let receiver = Receiver::start(|_| 200).await;
    app.post(
        Admin,
        "/v1/webhooks",
        json!({"url": receiver.url, "event_types": ["*"]}),
    )
    .await
    .assert_status(201);
    let (customer, order) = customer_with_personal_data(&app).await;
    app.confirm(&order).await;
    app.captured_payment(&order, 2999).await;

    let s = setup(&app).await;
    let mailer = Mailer::new(&sink.url, "Ordo <orders@ordo.invalid>").unwrap();
    let notifier = Notifier {
        runner: WorkerRunner::connect(
            app.pool.clone(),
            Notification::new(true).with_keys(keys(&app)),
            s.worker_config.clone(),
        )
        .await
        .unwrap(),
        sender: Some(quick_sender_with_keys(
            keys(&app),
            mailer,
            Duration::from_secs(30),
        )),
    };
    let integration = WorkerRunner::connect(
        app.pool.clone(),
        Integration::with_keys(keys(&app)),
        s.worker_config.clone(),
    )
    .await
    .unwrap();
    let deliveries = quick_pool(&app, None, 3);
    work_all(&app, &s, &notifier, &integration, &deliveries).await;

    // Before the erasure: Ordo's workers opened the sealed fields; the stream did not.
    let mails = sink.mails();
    assert!(!mails.is_empty());
    assert!(
        mails.iter().all(|m| m.to == [format!("<{EMAIL}>")]),
        "{mails:#?}"
    );
    assert!(mails[0].data.contains(&format!("Hello {NAME}")));
    let hooks: String = receiver
        .received()
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert!(hooks.contains(EMAIL), "webhooks carry clear text: {hooks}");
    let on_stream = stream_contents(&s).await;
    assert!(on_stream.contains("\"sealed\""));
    assert!(leaked(&on_stream).is_empty(), "{on_stream}");
    // The read models and the notification worker's tables keep it sealed; authorized reads
    // open it. (The webhook outbox holds the bodies to deliver in clear until erasure.)
    let stored = worker_and_read_model_rows(&app, false).await;
    assert!(
        leaked(&stored).is_empty(),
        "{:?} in {stored}",
        leaked(&stored)
    );
    let listed = app
        .get(
            Support,
            &format!("/v1/notifications?customer_id={customer}"),
        )
        .await;
    assert_eq!(listed.body["items"][0]["recipient"], EMAIL);
    assert!(listed.body["items"][0]["body"]
        .as_str()
        .unwrap()
        .contains(NAME));
    let profile = app
        .get_fresh(Support, &format!("/v1/customers/{customer}"))
        .await;
    assert_eq!(profile.body["email"], EMAIL);

    // Act: erase, then cancel the order (which mails nothing to the erased customer).
    app.post(Admin, &format!("/v1/customers/{customer}/erase"), json!({}))
        .await
        .assert_status(200);
    let mails_before = sink.mails().len();
    app.cancel(&order, "customer request").await;
    work_all(&app, &s, &notifier, &integration, &deliveries).await;

    // Assert: no mail after the erasure; later notifications are skipped with the reason.
    assert_eq!(
        sink.mails().len(),
        mails_before,
        "nothing mailed after the erasure"
    );
    let listed = app
        .get(
            Support,
            &format!("/v1/notifications?customer_id={customer}"),
        )
        .await;
    let items = listed.body["items"].as_array().unwrap();
    let cancelled = items
        .iter()
        .find(|n| n["kind"] == "order_cancelled")
        .expect("the cancellation is recorded");
    assert_eq!(cancelled["status"], "skipped");
    assert!(cancelled["error"].as_str().unwrap().contains("erased"));
    assert!(items
        .iter()
        .all(|n| n["recipient"].is_null() && n["body"].is_null()));

    // Nothing readable anywhere Ordo keeps or serves it.
    let mut everywhere = String::new();
    for path in [
        format!("/v1/customers/{customer}/history"),
        format!("/v1/customers/{customer}/state"),
        format!("/v1/orders/{order}/history"),
        format!("/v1/orders/{order}/state"),
        format!("/v1/notifications?customer_id={customer}"),
    ] {
        let resp = app.get(Support, &path).await;
        resp.assert_status(200);
        everywhere.push_str(&resp.body.to_string());
    }
    for path in [
        format!("/v1/orders/{order}"),
        format!("/v1/customers/{customer}"),
    ] {
        let resp = app.get_fresh(Support, &path).await;
        resp.assert_status(200);
        everywhere.push_str(&resp.body.to_string());
    }
    let history = app
        .get(Support, &format!("/v1/customers/{customer}/history"))
        .await;
    assert_eq!(history.body["items"][0]["data"]["email"], "[erased]");
    for name in ["orders", "payments", "customers"] {
        app.post(Admin, &format!("/v1/projections/{name}/rebuild"), json!({}))
            .await
            .assert_status(202);
    }
    wait_until_rebuilt(&app).await;
    everywhere.push_str(&worker_and_read_model_rows(&app, true).await);
    everywhere.push_str(&stored_payloads(&app).await);
    everywhere.push_str(&stream_contents(&s).await);
    assert!(
        leaked(&everywhere).is_empty(),
        "{:?} in {everywhere}",
        leaked(&everywhere)
    );

    assert_chain_intact(&app).await;
    s.cleanup().await;
    let logs = capture.text();
    assert!(logs.contains(&customer), "the capture saw the scenario");
    assert!(leaked(&logs).is_empty(), "{:?} was logged", leaked(&logs));
}

#[tokio::test]
async fn erasure_leaves_analytics_as_counted_live_and_as_recomputed() {
    // Arrange: two customers with paid orders (one also with a cancelled one), counted by
    // the live analytics worker.
    let app = spawn_app_with(|c| {
        c.master_key = Some(Secret::new(MASTER_KEY));
        c.roles = vec![ProcessRole::Api];
    })
    .await;
    let (erased, order) = customer_with_personal_data(&app).await;
    app.confirm(&order).await;
    app.captured_payment(&order, 2999).await;
    let cancelled = app.place_order(&erased).await;
    app.cancel(&cancelled, "customer request").await;
    let kept = app.register_customer().await;
    app.paid_order(&kept).await;
    let s = setup(&app).await;
    let runner = analytics_rebuild::worker(&app, &s).await;
    analytics_rebuild::settle(&app, &s, &runner).await;
    let tables = analytics_rebuild::tables(&app).await;
    let totals = analytics_rebuild::totals(&app).await;
    assert_eq!(totals, (3, 3 * 2999), "three orders placed, all counted");
    assert!(!tables.0.is_empty() && !tables.1.is_empty());

    // Act: erase one customer; the live worker sees `customer.erased` like any event.
    app.post(Admin, &format!("/v1/customers/{erased}/erase"), json!({}))
        .await
        .assert_status(200);
    assert_eq!(
        app.event_types("customer", &erased).await.last().unwrap(),
        "customer.erased"
    );
    analytics_rebuild::settle(&app, &s, &runner).await;

    // Assert: the figures are what they were, live and after a recompute from the log.
    assert_eq!(analytics_rebuild::tables(&app).await, tables);
    assert_eq!(analytics_rebuild::totals(&app).await, totals);
    let rebuilt = analytics_rebuild::recompute(&app, 5).await;
    assert_eq!(rebuilt.events, app.event_count().await);
    assert_eq!(rebuilt.skipped, 0, "the recompute reads every erased event");
    assert_eq!(analytics_rebuild::tables(&app).await, tables);
    assert_eq!(analytics_rebuild::totals(&app).await, totals);
    s.cleanup().await;
}

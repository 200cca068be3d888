//! The order ⇄ payment process manager: a cancelled order's payments are voided or
//! refunded, once, whatever happens to the process.

use std::time::{Duration, Instant};

use ordo::ProcessRole;
use ordo_api::Role::{Storefront, Support};
use ordo_workers::process_manager::Step;
use ordo_workers::ProcessManager;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

async fn payment_state(app: &TestApp, payment: &str) -> serde_json::Value {
    app.get(Support, &format!("/v1/payments/{payment}/state"))
        .await
        .body
}

/// Wait until the payment's folded state has `status`.
async fn wait_for_status(app: &TestApp, payment: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = payment_state(app, payment).await;
        if state["status"] == status {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "payment stayed {}",
            state["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Step a process manager of the test's own until `done`, then, as after a crash before
/// its checkpoint, rewind the checkpoint and handle every event again. Returns the number
/// of events in the log before and after the second pass.
async fn step_until_then_handle_all_again(
    app: &TestApp,
    mut done: impl AsyncFnMut() -> bool,
) -> (i64, i64) {
    let commands = std::sync::Arc::new(ordo_commands::Commands::new(app.pool.clone()));
    let pm = ProcessManager::new(app.pool.clone(), commands);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "the process manager never got there"
        );
        pm.step().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = app.event_count().await;
    sqlx::query("UPDATE process_manager.checkpoint SET global_position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    while pm.step().await.unwrap() != Step::Idle {}
    (before, app.event_count().await)
}

async fn order_payment_status(app: &TestApp, order: &str) -> String {
    app.get(Support, &format!("/v1/orders/{order}/state"))
        .await
        .body["payment_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Wait until the order's own stream records `status`.
async fn wait_for_order_payment_status(app: &TestApp, order: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = order_payment_status(app, order).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "order payment status stayed {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_order_records_the_payment_status_its_payments_amount_to() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let total = app
        .get(Support, &format!("/v1/orders/{order}/state"))
        .await
        .body["total"]
        .as_i64()
        .unwrap();
    assert_eq!(order_payment_status(&app, &order).await, "unpaid");

    let payment = app.authorized_payment(&order, total).await;
    wait_for_order_payment_status(&app, &order, "authorized").await;
    app.capture(&payment, total).await;
    wait_for_order_payment_status(&app, &order, "paid").await;
    app.refund(&payment, 1, "scratched").await;
    wait_for_order_payment_status(&app, &order, "partially_refunded").await;
    app.refund(&payment, total - 1, "returned").await;
    wait_for_order_payment_status(&app, &order, "refunded").await;

    // Each change is an event on the order's stream, caused by the payment event, recorded
    // by the process manager, and carrying the status it replaced.
    let history = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    let changes: Vec<&serde_json::Value> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.payment_status_changed")
        .collect();
    let statuses: Vec<(&str, &str)> = changes
        .iter()
        .map(|e| {
            (
                e["data"]["previous"].as_str().unwrap(),
                e["data"]["payment_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("unpaid", "authorized"),
            ("authorized", "paid"),
            ("paid", "partially_refunded"),
            ("partially_refunded", "refunded")
        ]
    );
    let last = changes.last().unwrap();
    assert_eq!(
        last["metadata"]["actor"],
        json!({"name": "process-manager", "role": "system"})
    );
    let payment_history = app
        .get(Support, &format!("/v1/payments/{payment}/history"))
        .await;
    let refunded_id = payment_history.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["event_id"]
        .clone();
    assert_eq!(last["metadata"]["causation_id"], refunded_id);

    // The read model agrees once it reaches the stream's version, payment status events
    // included.
    let version = history.body["items"].as_array().unwrap().len() as i64;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = app.get(Support, &format!("/v1/orders/{order}")).await;
        if view.body["version"].as_i64() == Some(version) {
            assert_eq!(view.body["payment_status"], "refunded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view stayed at {}",
            view.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn recording_payment_statuses_again_records_nothing_new() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let order = app.confirmed_order().await;
    let total = app
        .get(Support, &format!("/v1/orders/{order}/state"))
        .await
        .body["total"]
        .as_i64()
        .unwrap();
    let payment = app.authorized_payment(&order, total).await;
    app.capture(&payment, 10).await;

    let (before, after) = step_until_then_handle_all_again(&app, async || {
        order_payment_status(&app, &order).await == "authorized"
    })
    .await;
    assert_eq!(after, before, "nothing recorded twice");
    assert_eq!(
        order_payment_status(&app, &order).await,
        "authorized",
        "the order shows what its payments amount to: 10 captured of the authorized total"
    );
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_and_voids_its_payments() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let captured = app.authorized_payment(&order, 2000).await;
    app.capture(&captured, 1500).await;
    app.refund(&captured, 100, "r").await;
    let authorized = app.authorized_payment(&order, 999).await;
    let pending = app.payment(&order, 10).await;

    app.cancel(&order, "customer called").await;

    let refunded = wait_for_status(&app, &captured, "refunded").await;
    assert_eq!(
        refunded["refunded"], 1500,
        "the rest of the capture is refunded"
    );
    wait_for_status(&app, &authorized, "voided").await;
    assert_eq!(
        payment_state(&app, &pending).await["status"],
        "pending",
        "a pending payment is left alone"
    );

    // The commands name the cancellation as their cause and the process manager as actor.
    let order_history = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await;
    let cancelled_id = order_history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "order.cancelled")
        .expect("the cancellation is in the order's history")["event_id"]
        .clone();
    let history = app
        .get(Support, &format!("/v1/payments/{captured}/history"))
        .await;
    let last = history.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "payment.refunded");
    assert_eq!(last["metadata"]["causation_id"], cancelled_id);
    assert_eq!(
        last["metadata"]["actor"],
        json!({"name": "process-manager", "role": "system"})
    );
    assert_eq!(last["data"]["reason"], "order cancelled: customer called");
}

#[tokio::test]
async fn handling_the_same_cancellation_again_has_no_second_effect() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let order = app.confirmed_order().await;
    let payment = app.captured_payment(&order, 2999).await;
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "r"}),
    )
    .await
    .assert_status(200);

    let (before, after) = step_until_then_handle_all_again(&app, async || {
        payment_state(&app, &payment).await["status"] == "refunded"
            && order_payment_status(&app, &order).await == "refunded"
    })
    .await;
    assert_eq!(
        after, before,
        "no second refund, no refused attempt recorded"
    );
    assert_eq!(
        app.event_types("payment", &payment)
            .await
            .iter()
            .filter(|t| *t == "payment.refunded")
            .count(),
        1
    );
}

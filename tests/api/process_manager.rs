//! The order ⇄ payment process manager: a cancelled order's payments are voided or
//! refunded, once, whatever happens to the process.

use std::time::{Duration, Instant};

use ordo::ServeRole;
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

#[tokio::test]
async fn cancelling_a_paid_order_refunds_and_voids_its_payments() {
    let app = spawn_app().await;
    let order = app.confirmed_order().await;
    let captured = app.authorized_payment(&order, 2000).await;
    app.post(
        Storefront,
        &format!("/v1/payments/{captured}/capture"),
        json!({"amount": 1500}),
    )
    .await
    .assert_status(200);
    app.post(
        Storefront,
        &format!("/v1/payments/{captured}/refund"),
        json!({"amount": 100, "reason": "r"}),
    )
    .await
    .assert_status(200);
    let authorized = app.authorized_payment(&order, 999).await;
    let pending = app.payment(&order, 10).await;

    app.post(
        Support,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "customer called"}),
    )
    .await
    .assert_status(200);

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
    let cancelled_id = app
        .get(Support, &format!("/v1/orders/{order}/history"))
        .await
        .body["items"][2]["event_id"]
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
    let app = spawn_app_with(|c| c.roles = vec![ServeRole::Api]).await;
    let order = app.confirmed_order().await;
    let payment = app.authorized_payment(&order, 2999).await;
    app.post(
        Storefront,
        &format!("/v1/payments/{payment}/capture"),
        json!({"amount": 2999}),
    )
    .await
    .assert_status(200);
    app.post(
        Storefront,
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "r"}),
    )
    .await
    .assert_status(200);

    let commands = std::sync::Arc::new(ordo_commands::Commands::new(app.pool.clone()));
    let pm = ProcessManager::new(app.pool.clone(), commands);
    let deadline = Instant::now() + Duration::from_secs(15);
    while payment_state(&app, &payment).await["status"] != "refunded" {
        assert!(Instant::now() < deadline);
        pm.step().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events_before = app.event_count().await;

    // As after a crash before the checkpoint: the same events are handled again.
    sqlx::query("UPDATE process_manager.checkpoint SET tx_id = '0', global_position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    while pm.step().await.unwrap() != Step::Idle {}
    assert_eq!(
        app.event_count().await,
        events_before,
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

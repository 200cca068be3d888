//! What the server's log says about answers that fail.

use ordo_api::Role::Storefront;
use serde_json::Value;

use crate::helpers::{order_body, spawn_app_with};
use crate::workers::trace_context::capture_logs;

/// A 503 tells the client to retry later (here: a read model behind `min_position`): the
/// log records it as a warning, so that an alert on errors does not fire while a process
/// starts or a read model catches up.
#[tokio::test(flavor = "current_thread")]
async fn a_retry_later_answer_is_a_warning_in_the_log_not_an_error() {
    let (capture, _guard) = capture_logs("warn");

    // No projector runs here, so a committed order is never applied to its read model.
    let app = spawn_app_with(|c| {
        c.roles = vec![ordo::ProcessRole::Api];
        c.read_wait_secs = 1;
    })
    .await;
    let customer = app.register_customer().await;
    let placed = app
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await;
    let position = placed.body["position"].as_i64().expect("a position");
    app.get(Storefront, &format!("/v1/orders?min_position={position}"))
        .await
        .assert_problem(503, "projection-behind");

    let logs = capture.text();
    let failed: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "response failed")
        .collect();
    assert_eq!(failed.len(), 1, "one failed response logged: {logs}");
    assert_eq!(failed[0]["level"], "WARN", "{logs}");
    assert!(
        failed[0]["fields"]["classification"]
            .as_str()
            .is_some_and(|c| c.contains("503")),
        "{logs}"
    );
}

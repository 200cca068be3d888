//! The relay and the workers on real NATS JetStream: notifications, webhooks and their
//! deliveries, analytics, the process manager, dead letters and their operation, TLS, SSRF
//! and trace context across them.

pub mod advisories;
pub mod analytics_rebuild;
pub mod deliveries;
pub mod jetstream;
pub mod notifications;
pub mod process_manager;
pub mod relay;
pub mod ssrf;
pub mod tls;
pub mod trace_context;
pub mod webhooks;
pub mod worker_ops;

/// Rows of the table `relation` a plan (`EXPLAIN (ANALYZE, FORMAT JSON)`) read, returned or
/// filtered out, over all its nodes and loops.
pub(crate) fn rows_read(plan: &serde_json::Value, relation: &str) -> f64 {
    let here = if plan["Relation Name"] == relation {
        let per_loop = [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
        ]
        .iter()
        .map(|k| plan[*k].as_f64().unwrap_or(0.0))
        .sum::<f64>();
        per_loop * plan["Actual Loops"].as_f64().unwrap_or(1.0)
    } else {
        0.0
    };
    let below: f64 = plan["Plans"]
        .as_array()
        .map(|plans| plans.iter().map(|p| rows_read(p, relation)).sum())
        .unwrap_or(0.0);
    here + below
}

/// `sql` (a statement without parameters) run under `EXPLAIN (ANALYZE, FORMAT JSON)`: the
/// rows of `relation` it read ([`rows_read`]), and the plan, to show when they are too many.
pub(crate) async fn rows_read_by(
    pool: &sqlx::PgPool,
    sql: &str,
    relation: &str,
) -> (f64, serde_json::Value) {
    let explained: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
            .fetch_one(pool)
            .await
            .unwrap();
    (rows_read(&explained[0]["Plan"], relation), explained)
}

/// One worker's row of `GET /v1/workers` (asked as an admin; a 200 is required).
pub(crate) async fn worker_status(app: &crate::helpers::TestApp, name: &str) -> serde_json::Value {
    let status = app.get(ordo_api::Role::Admin, "/v1/workers").await;
    status.assert_status(200);
    status.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {}", status.body))
        .clone()
}

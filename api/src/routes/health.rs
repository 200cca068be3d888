//! Liveness and readiness; no API key needed.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{admin, Unavailable};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = admin::Health)))]
async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when PostgreSQL answers within a second.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = admin::Readiness), Unavailable))]
async fn ready(State(app): State<AppState>) -> Response {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&app.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => Json(json!({"status": "ready", "checks": {"postgres": "ok"}})).into_response(),
        Ok(Err(e)) => ApiError::Unavailable(e.to_string()).into_response(),
        Err(_) => ApiError::Unavailable("postgres did not answer in time".into()).into_response(),
    }
}

//! Liveness and readiness; no API key needed.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
}

/// Ready when PostgreSQL answers within a second.
async fn ready(State(app): State<AppState>) -> Response {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&app.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => Json(json!({"status": "ready", "checks": {"postgres": "ok"}})).into_response(),
        Ok(Err(e)) => ApiError::Unavailable(e.to_string()).into_response(),
        Err(_) => ApiError::Unavailable("postgres did not answer in time".into()).into_response(),
    }
}

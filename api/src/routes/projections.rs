//! `/v1/projections`: status and lag of each read model; rebuild without downtime.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ordo_projections::{status, Projection};
use serde_json::json;

use crate::auth::{self, Allowed};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/projections", get(list))
        .route("/v1/projections/{name}/rebuild", post(rebuild))
}

async fn list(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::ProjectionReaders>,
) -> Result<Response, ApiError> {
    let items = status::all(&app.pool).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// 202: the active runner builds a fresh copy from position zero and swaps it in once it
/// has caught up; progress shows in `GET /v1/projections`.
async fn rebuild(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Rebuilders>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let projection = Projection::from_name(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no projection is called `{name}`")))?;
    let accepted = status::request_rebuild(&app.pool, projection).await?;
    let current = status::one(&app.pool, projection).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": projection.name(), "requested": accepted, "status": current})),
    )
        .into_response())
}

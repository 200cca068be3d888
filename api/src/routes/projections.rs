//! `/v1/projections`: status and lag of each read model; rebuild without downtime.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_projections::{status, Projection};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Allowed, Global};
use crate::openapi::{AdminBodyProblems, RestrictedReadProblems};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(rebuild))
}

/// Status and lag of each read model (support, analyst, admin).
#[utoipa::path(get, path = "/v1/projections", tag = "projections",
    responses((status = 200, description = "Every projection", body = status::ProjectionList),
        RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::ProjectionReaders>,
) -> Result<Response, ApiError> {
    let items = status::all(&app.pool).await?;
    Ok(Json(status::ProjectionList { items }).into_response())
}

/// The answer to a rebuild request.
#[derive(Serialize, ToSchema)]
struct RebuildAccepted {
    name: &'static str,
    /// False when a rebuild was already requested or running.
    requested: bool,
    status: status::ProjectionStatus,
}

/// 202: the active runner builds a fresh copy from position zero and swaps it in once it
/// has caught up; progress shows in `GET /v1/projections`.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "projections",
    params(("name" = String, Path, description = "`orders`, `payments` or `customers`")),
    responses((status = 202, description = "Requested", body = RebuildAccepted),
        AdminBodyProblems))]
async fn rebuild(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Rebuilders>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let projection = Projection::from_name(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no projection is called `{name}`")))?;
    let accepted = status::request_rebuild(&app.pool, projection).await?;
    let current = status::one(&app.pool, projection).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RebuildAccepted {
            name: projection.name(),
            requested: accepted,
            status: current,
        }),
    )
        .into_response())
}

//! An endpoint's deliveries: list by status, show with attempts, retry now, send a test.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_workers::integration::outbox::{self, DeliveryDetail, DeliveryList, DeliveryView};
use uuid::Uuid;

use super::endpoints::not_found as endpoints_not_found;
use crate::auth::{self, Global};
use crate::extract::{PathId, QueryParams};
use crate::openapi::{params, RestrictedReadOneProblems};
use crate::routes::{limit_param, text_param};
use crate::{ApiError, AppState};

/// `{id}/deliveries/{delivery_id}`: both uuids, else nothing can be found.
fn ids(Path((endpoint, delivery)): Path<(String, String)>) -> Result<(Uuid, Uuid), ApiError> {
    match (Uuid::parse_str(&endpoint), Uuid::parse_str(&delivery)) {
        (Ok(endpoint), Ok(delivery)) => Ok((endpoint, delivery)),
        _ => Err(ApiError::NotFound("not an id this API issues".into())),
    }
}

fn no_delivery() -> ApiError {
    ApiError::NotFound("this endpoint has no delivery with this id".into())
}

/// An endpoint's deliveries, newest first; `status` = `pending`, `delivered` or `failed`
/// (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "list_deliveries",
    params(("id" = Uuid, Path, description = "The endpoint's id"),
        ("status" = inline(Option<params::DeliveryStatus>), Query, description = "Only deliveries with this status"),
        params::Limit),
    responses((status = 200, description = "Deliveries", body = DeliveryList),
        RestrictedReadOneProblems))]
pub(super) async fn list(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let limit = limit_param(&q)?;
    let status = text_param(&q, "status")?;
    if let Some(status) = status {
        if !outbox::STATUSES.contains(&status) {
            return Err(ApiError::BadQuery {
                param: "status",
                detail: "must be `pending`, `delivered` or `failed`".into(),
            });
        }
    }
    let page = outbox::deliveries(&app.pool, id, status, limit)
        .await?
        .ok_or_else(endpoints_not_found)?;
    Ok(Json(page).into_response())
}

/// One delivery and its attempts, newest first (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "webhooks", operation_id = "show_delivery",
    params(("id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery_id" = Uuid, Path, description = "The delivery's id")),
    responses((status = 200, description = "The delivery", body = DeliveryDetail),
        RestrictedReadOneProblems))]
pub(super) async fn show(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (endpoint, delivery) = ids(path)?;
    let detail = outbox::delivery(&app.pool, endpoint, delivery)
        .await?
        .ok_or_else(no_delivery)?;
    Ok(Json(detail).into_response())
}

/// Send a delivery again now: a pending one without waiting for its next attempt, a
/// failed one once more, a delivered one again (admin). 202: the delivery pool sends it.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery_id" = Uuid, Path, description = "The delivery's id")),
    responses((status = 202, description = "Due now", body = DeliveryView),
        RestrictedReadOneProblems))]
pub(super) async fn retry(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (endpoint, delivery) = ids(path)?;
    let view = outbox::retry_now(&app.pool, endpoint, delivery)
        .await?
        .ok_or_else(no_delivery)?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Queue a test message (`type` `webhook.test`) for an endpoint, whatever it subscribes
/// to (admin). 202: the delivery pool sends it; follow it in the deliveries.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 202, description = "Queued", body = DeliveryView),
        RestrictedReadOneProblems))]
pub(super) async fn send_test(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let view = outbox::send_test(&app.pool, id)
        .await?
        .ok_or_else(endpoints_not_found)?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

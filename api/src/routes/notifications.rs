//! `/v1/notifications`: the e-mails the notification worker sent or recorded, from its
//! tables (through `ordo_workers::notification`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_workers::notification;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::uuid_param;
use crate::auth::{self, Allowed};
use crate::extract::QueryParams;
use crate::openapi::{params, RestrictedReadProblems};
use crate::{ApiError, AppState};

/// The most a list returns.
const LIMIT: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Notifications sent or recorded, newest first, at most 100 (support, admin).
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(params::Notifications),
    responses((status = 200, description = "Notifications", body = notification::NotificationList),
        RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::NotificationReaders>,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
    let order_id = uuid_param(&q, "order_id")?;
    let customer_id = uuid_param(&q, "customer_id")?;
    let items = notification::list(
        &app.pool,
        app.commands.keys(),
        channel.as_deref(),
        order_id,
        customer_id,
        LIMIT,
    )
    .await?;
    Ok(Json(items).into_response())
}

//! `/v1/notifications`: the e-mails the notification worker sent or recorded, from its
//! tables (through `ordo_workers::notification`).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ordo_workers::notification;

use super::{uuid_param, Params};
use crate::auth::{self, Allowed};
use crate::{ApiError, AppState};

/// The most a list returns.
const LIMIT: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/notifications", get(list))
}

/// `?order_id=&customer_id=` (both optional): newest first, at most 100.
async fn list(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::NotificationReaders>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let order_id = uuid_param(&q, "order_id")?;
    let customer_id = uuid_param(&q, "customer_id")?;
    let items = notification::list(&app.pool, order_id, customer_id, LIMIT).await?;
    Ok(Json(items).into_response())
}

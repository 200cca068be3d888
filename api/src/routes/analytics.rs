//! `/v1/analytics`: sales per hour or day per currency, and the order funnel, from the
//! analytics worker's tables.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use ordo_workers::analytics;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Params;
use crate::auth::{self, Allowed};
use crate::extract::QueryParams;
use crate::openapi::{params, RestrictedReadProblems};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sales))
        .routes(routes!(funnel))
}

fn time_param(q: &Params, param: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get(param)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadQuery {
                    param,
                    detail: "must be an RFC 3339 time such as 2026-01-31T00:00:00Z".into(),
                })
        })
        .transpose()
}

/// Sales per hour or day per currency (analyst, admin). `from` defaults to seven days
/// before `to`, `to` to now; granularity to `day`.
#[utoipa::path(get, path = "/v1/analytics/sales", tag = "analytics", params(params::Sales),
    responses((status = 200, description = "Buckets", body = analytics::SalesReport),
        RestrictedReadProblems))]
async fn sales(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Analysts>,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
    let granularity = q.get("granularity").map_or("day", String::as_str);
    if !["hour", "day"].contains(&granularity) {
        return Err(ApiError::BadQuery {
            param: "granularity",
            detail: "must be hour or day".into(),
        });
    }
    let to = time_param(&q, "to")?.unwrap_or_else(Utc::now);
    let from = time_param(&q, "from")?.unwrap_or(to - TimeDelta::days(7));
    if from > to {
        return Err(ApiError::BadQuery {
            param: "from",
            detail: "must not be after `to`".into(),
        });
    }
    let report =
        analytics::sales_report(&app.pool, channel.as_deref(), from, to, granularity).await?;
    Ok(Json(report).into_response())
}

/// Orders reaching each stage, and the cancellation and refund rates (analyst, admin).
#[utoipa::path(get, path = "/v1/analytics/funnel", tag = "analytics",
    params(("channel" = Option<String>, Query, nullable = false,
        pattern = "^[a-z0-9][a-z0-9-]{0,62}$",
        description = "Only this channel's (a global key; default: every channel). A scoped key \
            sees its own channel only; naming another is 403.")),
    responses((status = 200, description = "The funnel", body = analytics::Funnel),
        RestrictedReadProblems))]
async fn funnel(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Analysts>,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
    Ok(Json(analytics::funnel(&app.pool, channel.as_deref()).await?).into_response())
}

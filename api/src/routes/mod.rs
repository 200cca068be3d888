//! One module per resource, each with its `router()`.

pub mod analytics;
pub mod audit;
pub mod channels;
pub mod customers;
pub mod health;
pub mod integrity;
pub mod keys;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod projections;
pub mod webhooks;
pub mod workers;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A read: the JSON plus an `ETag` of the version it reflects.
pub(crate) fn versioned_json(version: u64, body: impl serde::Serialize) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

use std::collections::HashMap;

use ordo_projections::Projection;
use uuid::Uuid;

use crate::read_wait::Waited;
use crate::{ApiError, AppState};

pub(crate) type Params = HashMap<String, String>;

pub(crate) fn int_param(q: &Params, param: &'static str) -> Result<Option<i64>, ApiError> {
    q.get(param)
        .map(|raw| {
            raw.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or(ApiError::BadQuery {
                    param,
                    detail: "must be a non-negative integer".into(),
                })
        })
        .transpose()
}

pub(crate) fn uuid_param(q: &Params, param: &'static str) -> Result<Option<Uuid>, ApiError> {
    q.get(param)
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| ApiError::BadQuery {
                param,
                detail: "must be a uuid".into(),
            })
        })
        .transpose()
}

/// A free-text query parameter. PostgreSQL cannot hold a NUL character in text, so one
/// is a bad parameter rather than a failed query.
pub(crate) fn text_param<'q>(
    q: &'q Params,
    param: &'static str,
) -> Result<Option<&'q str>, ApiError> {
    match q.get(param) {
        Some(raw) if raw.contains('\0') => Err(ApiError::BadQuery {
            param,
            detail: "must not contain NUL characters".into(),
        }),
        raw => Ok(raw.map(String::as_str)),
    }
}

pub(crate) const DEFAULT_PAGE: i64 = 50;
pub(crate) const MAX_PAGE: i64 = 500;

pub(crate) fn limit_param(q: &Params) -> Result<i64, ApiError> {
    let limit = int_param(q, "limit")?.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadQuery {
            param: "limit",
            detail: format!("must be from 1 to {MAX_PAGE}"),
        })
    }
}

/// Read your writes: with `min_position=N`, wait until `projection` has applied the event at
/// N; past the configured wait, 503 rather than older data. A position no committed event
/// has is a 400 at once: no wait would ever reach it.
pub(crate) async fn wait_for_position(
    app: &AppState,
    projection: Projection,
    q: &Params,
) -> Result<(), ApiError> {
    // Position 0 is before every event: nothing to wait for.
    let Some(position) = int_param(q, "min_position")?.filter(|p| *p > 0) else {
        return Ok(());
    };
    let waited = app
        .progress
        .wait_for(&app.pool, projection, position, app.config.read_wait)
        .await?;
    match waited {
        Waited::Reached => Ok(()),
        Waited::Behind => Err(ApiError::ProjectionBehind {
            projection: projection.name(),
            position,
        }),
        Waited::NoSuchPosition => Err(ApiError::BadQuery {
            param: "min_position",
            detail: format!("no committed event has position {position}; use a position a command answered with"),
        }),
    }
}

/// A failed read of a read model. Until the projector has created a read model's tables
/// (just after a first start) the read is a retry-later 503, not a 500.
pub(crate) fn read_error(err: sqlx::Error) -> ApiError {
    let undefined_table =
        matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"));
    if undefined_table {
        ApiError::Unavailable(format!("read model not created yet: {err}"))
    } else {
        err.into()
    }
}

/// A list page as `{items, next_cursor}`.
pub(crate) fn page_json<T: serde::Serialize>(page: ordo_projections::views::Page<T>) -> Response {
    Json(page).into_response()
}

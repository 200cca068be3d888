//! `/v1/workers` and `/v1/dead-letters` (admin): worker lag, replay, dead letters, redrive.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ordo_workers::ops::{OpsError, ReplayFrom};
use serde_json::json;

use super::Params;
use crate::auth::{self, Allowed};
use crate::extract::{CommandBody, PathId};
use crate::validate::Validation;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", get(status))
        .route("/v1/workers/{name}/replay", post(replay))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/redrive", post(redrive_all))
        .route("/v1/dead-letters/{id}/redrive", post(redrive))
}

impl From<OpsError> for ApiError {
    fn from(err: OpsError) -> Self {
        match err {
            OpsError::UnknownWorker(name) => {
                Self::NotFound(format!("no worker is called `{name}`"))
            }
            OpsError::UnknownPosition(p) => {
                Self::field("from_position", format!("no event has position {p}"))
            }
            err @ OpsError::CannotReprocess(_) => Self::field("reprocess", err.to_string()),
            OpsError::Db(e) => e.into(),
            OpsError::Nats(e) => Self::Unavailable(format!("nats: {e}")),
        }
    }
}

async fn status(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Admins>,
) -> Result<Response, ApiError> {
    let items = app.workers.status(&app.pool).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Body: `{"from_position": N}` or `{"from_time": "RFC 3339"}`, and `"reprocess": true` to
/// repeat side effects (e-mails, webhooks) from there. 202: the worker's consumer starts
/// again from there; without `reprocess` handlers skip what they already did.
async fn replay(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Admins>,
    Path(name): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let mut v = Validation::new();
    let mut reprocess = false;
    let from = match v.object(&body.json, "") {
        Some(o) => {
            reprocess = v.optional::<bool>(o, "", "reprocess").unwrap_or(false);
            let position = v.optional::<i64>(o, "", "from_position");
            let time = v.optional::<DateTime<Utc>>(o, "", "from_time");
            match (position, time) {
                (Some(p), None) => Some(ReplayFrom::Position(p)),
                (None, Some(t)) => Some(ReplayFrom::Time(t)),
                _ => {
                    v.error("from_position", "give either from_position or from_time");
                    None
                }
            }
        }
        None => None,
    };
    let from = v.finish(|| from)?;
    let (start, forgotten) = app
        .workers
        .replay(&app.pool, &name, from, reprocess)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "worker": name,
            "from_time": start,
            "reprocess": reprocess,
            "forgotten": forgotten,
        })),
    )
        .into_response())
}

async fn dead_letters(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Admins>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let list = app
        .workers
        .dead_letters(&app.pool, q.get("worker").map(String::as_str))
        .await?;
    Ok(Json(list).into_response())
}

async fn redrive(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Admins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    if app.workers.redrive(&app.pool, id).await? {
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "redriven": true})),
        )
            .into_response())
    } else {
        Err(ApiError::NotFound(
            "no dead letter waiting with this id".into(),
        ))
    }
}

/// Body: `{"worker": NAME}`: redrive every waiting dead letter of that worker.
async fn redrive_all(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let mut v = Validation::new();
    let worker = match v.object(&body.json, "") {
        Some(o) => v.required::<String>(o, "", "worker"),
        None => None,
    };
    let worker = v.finish(|| worker)?;
    let n = app.workers.redrive_all(&app.pool, &worker).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"worker": worker, "redriven": n})),
    )
        .into_response())
}

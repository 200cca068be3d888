//! `/v1/workers` and `/v1/dead-letters` (admin): worker lag, replay, dead letters, redrive.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ordo_workers::ops::{OpsError, ReplayFrom};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::Params;
use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::openapi::{admin, params, AdminBodyProblems, RestrictedReadProblems};
use crate::validate::Validation;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(replay))
        .routes(routes!(dead_letters))
        .routes(routes!(redrive_all))
        .routes(routes!(redrive))
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

/// The answer to a replay.
#[derive(Serialize, ToSchema)]
struct ReplayAccepted {
    worker: String,
    /// The time the worker's consumer starts again from.
    from_time: DateTime<Utc>,
    reprocess: bool,
    /// Events whose processed record was forgotten so their effects repeat (0 without
    /// `reprocess`).
    forgotten: u64,
}

/// The answer to redriving one dead letter.
#[derive(Serialize, ToSchema)]
struct Redriven {
    id: Uuid,
    redriven: bool,
}

/// The answer to redriving a worker's oldest dead letters.
#[derive(Serialize, ToSchema)]
struct RedrivenAll {
    worker: String,
    /// How many dead letters were published again.
    redriven: u64,
    /// How many still wait: ask again until none do.
    remaining: u64,
}

/// Each worker's lag and dead letters (admin).
#[utoipa::path(get, path = "/v1/workers", tag = "workers",
    responses((status = 200, description = "Every worker", body = ordo_workers::ops::WorkerList),
        RestrictedReadProblems))]
async fn status(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
) -> Result<Response, ApiError> {
    let items = app.workers.status(&app.pool).await?;
    Ok(Json(ordo_workers::ops::WorkerList { items }).into_response())
}

/// Body: `{"from_position": N}` or `{"from_time": "RFC 3339"}`, and `"reprocess": true` to
/// repeat side effects (e-mails, webhooks) from there. 202: the worker's consumer starts
/// again from there; without `reprocess` handlers skip what they already did.
#[utoipa::path(post, path = "/v1/workers/{name}/replay", tag = "workers",
    request_body = admin::Replay,
    params(("name" = String, Path, description = "`notification`, `analytics` or `integration`")),
    responses((status = 202, description = "Replaying", body = ReplayAccepted),
        AdminBodyProblems))]
async fn replay(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
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
        Json(ReplayAccepted {
            worker: name,
            from_time: start,
            reprocess,
            forgotten,
        }),
    )
        .into_response())
}

/// Dead letters, newest first, at most 500 (admin).
#[utoipa::path(get, path = "/v1/dead-letters", tag = "workers", params(params::DeadLetters),
    responses((status = 200, description = "Dead letters", body = ordo_workers::ops::DeadLetterList),
        RestrictedReadProblems))]
async fn dead_letters(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let list = app
        .workers
        .dead_letters(&app.pool, super::text_param(&q, "worker")?)
        .await?;
    Ok(Json(list).into_response())
}

/// Publish one dead letter again (admin).
#[utoipa::path(post, path = "/v1/dead-letters/{id}/redrive", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "The dead letter's id")),
    responses((status = 202, description = "Published again", body = Redriven),
        AdminBodyProblems))]
async fn redrive(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    if app.workers.redrive(&app.pool, id).await? {
        Ok((StatusCode::ACCEPTED, Json(Redriven { id, redriven: true })).into_response())
    } else {
        Err(ApiError::NotFound(
            "no dead letter waiting with this id".into(),
        ))
    }
}

/// The most dead letters one `POST /v1/dead-letters/redrive` publishes again.
const MAX_REDRIVE: i64 = 1000;

/// Body: `{"worker": NAME, "limit"?: N}`: redrive the oldest `limit` (default 100, at most
/// 1000) waiting dead letters of that worker. The answer says how many `remaining` wait:
/// repeat until none do. Bounded, so no request runs for a whole backlog.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "workers",
    request_body = admin::RedriveAll,
    responses((status = 202, description = "Published again", body = RedrivenAll),
        AdminBodyProblems))]
async fn redrive_all(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let mut v = Validation::new();
    let (worker, limit) = match v.object(&body.json, "") {
        Some(o) => (
            v.required::<String>(o, "", "worker"),
            v.optional::<i64>(o, "", "limit"),
        ),
        None => (None, None),
    };
    if limit.is_some_and(|l| !(1..=MAX_REDRIVE).contains(&l)) {
        v.error("limit", "must be from 1 to 1000");
    }
    let worker = v.finish(|| worker)?;
    let (n, remaining) = app
        .workers
        .redrive_all(&app.pool, &worker, limit.unwrap_or(100))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RedrivenAll {
            worker,
            redriven: n as u64,
            remaining: remaining.max(0) as u64,
        }),
    )
        .into_response())
}

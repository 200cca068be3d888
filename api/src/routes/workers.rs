//! `/v1/workers` and `/v1/dead-letters` (admin): worker lag, replay, dead letters, redrive.

use axum::extract::{Path, State};
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

use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId, QueryParams};
use crate::openapi::{params, AdminBodyProblems, RestrictedReadProblems};
use crate::validate::{request_body, Scalar};
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

request_body! {
    /// Give exactly one of the two.
    pub struct Replay {
        /// Repeat side effects (e-mails, webhooks) from there; refused (422) for analytics.
        pub reprocess: Option<bool>,
        /// The global position of the first event to deliver again.
        pub from_position: Option<i64>,
        pub from_time: Option<DateTime<Utc>>,
    }
    check |v, body| {
        if body.from_position.is_some() == body.from_time.is_some() {
            v.error("from_position", "give either from_position or from_time");
        }
    }
}

/// Body: `{"from_position": N}` or `{"from_time": "RFC 3339"}`, and `"reprocess": true` to
/// repeat side effects (e-mails, webhooks) from there. 202: the worker's consumer starts
/// again from there; without `reprocess` handlers skip what they already did.
#[utoipa::path(post, path = "/v1/workers/{name}/replay", tag = "workers",
    request_body = Replay,
    params(("name" = inline(params::WorkerName), Path, description = "The worker")),
    responses((status = 202, description = "Replaying", body = ReplayAccepted),
        AdminBodyProblems))]
async fn replay(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    Path(name): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let request = Replay::read(&body.json)?;
    let reprocess = request.reprocess.unwrap_or(false);
    let from = match (request.from_position, request.from_time) {
        (Some(position), _) => ReplayFrom::Position(position),
        (None, Some(time)) => ReplayFrom::Time(time),
        (None, None) => {
            return Err(ApiError::Internal(
                "a replay passed its check without a start".into(),
            ))
        }
    };
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
    QueryParams(q): QueryParams,
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

/// How many dead letters to redrive: 1 to [`MAX_REDRIVE`].
pub struct RedriveLimit(i64);

impl<'de> serde::Deserialize<'de> for RedriveLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let limit = i64::deserialize(d)?;
        if (1..=MAX_REDRIVE).contains(&limit) {
            Ok(Self(limit))
        } else {
            Err(serde::de::Error::custom("must be from 1 to 1000"))
        }
    }
}

impl Scalar for RedriveLimit {}

request_body! {
    pub struct RedriveAll {
        pub worker: String,
        /// The most dead letters to redrive now, oldest first (default 100).
        #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000)]
        pub limit: Option<RedriveLimit>,
    }
}

/// Body: `{"worker": NAME, "limit"?: N}`: redrive the oldest `limit` (default 100, at most
/// 1000) waiting dead letters of that worker. The answer says how many `remaining` wait:
/// repeat until none do. Bounded, so no request runs for a whole backlog.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "workers",
    request_body = RedriveAll,
    responses((status = 202, description = "Published again", body = RedrivenAll),
        AdminBodyProblems))]
async fn redrive_all(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let request = RedriveAll::read(&body.json)?;
    let worker = request.worker;
    let limit = request.limit.map_or(100, |limit| limit.0);
    let (n, remaining) = app.workers.redrive_all(&app.pool, &worker, limit).await?;
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

//! `/v1/audit/checkpoints` and `/v1/audit/verifications` (admin): signing the log's head on
//! demand, and verifying the hash chain and its signed checkpoints in the background.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ordo_commands::checkpoint::{self, Checkpoint, SignError, Signed};
use ordo_commands::verification;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::openapi::{AdminBodyProblems, RestrictedReadOneProblems, RestrictedReadProblems};
use crate::validate::request_body;
use crate::{ApiError, AppState};

/// Checkpoints listed at most.
const LISTED: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign, checkpoints))
        .routes(routes!(start_verification))
        .routes(routes!(verification))
}

/// Sign the log's last event now (admin). 201 with the new checkpoint; 200 with the last
/// one when nothing was appended since. 503 when this server has no signing key.
#[utoipa::path(post, path = "/v1/audit/checkpoints", tag = "audit",
    responses((status = 201, description = "Signed", body = CheckpointView),
        (status = 200, description = "The head was signed already", body = CheckpointView),
        AdminBodyProblems))]
async fn sign(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
) -> Result<Response, ApiError> {
    let signer = app.config.audit.signer.as_ref().ok_or_else(|| {
        ApiError::NotConfigured(
            "checkpoint signing is off: this server has no ORDO_AUDIT_SIGNING_KEY".into(),
        )
    })?;
    let signed = checkpoint::sign(&app.pool, signer)
        .await
        .map_err(|e| match e {
            SignError::Database(e) => ApiError::from(e),
            // Signed and stored; the witness file lacks it. Logged once where answered.
            witness @ SignError::Witness { .. } => ApiError::Internal(witness.to_string()),
        })?;
    match signed {
        Signed::New(c) => Ok((StatusCode::CREATED, Json(view(&c))).into_response()),
        Signed::Unchanged(c) => Ok(Json(view(&c)).into_response()),
        Signed::Empty => Err(ApiError::NotFound(
            "the log has no chained event to sign yet".into(),
        )),
    }
}

/// The latest signed checkpoints, newest first, at most 100 (admin). As stored: check them
/// with `ordo audit verify` or a verification, against a public key you trust.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "audit",
    responses((status = 200, description = "Checkpoints", body = CheckpointList),
        RestrictedReadProblems))]
async fn checkpoints(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
) -> Result<Response, ApiError> {
    let items = checkpoint::latest(&app.pool, LISTED)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(CheckpointList { items }).into_response())
}

/// A signed checkpoint as stored: Ed25519 over `ordo-checkpoint-v1`, the position
/// (big-endian i64), the hash and `signed_at` in microseconds (big-endian i64).
#[derive(Serialize, ToSchema)]
#[schema(as = AuditCheckpoint)]
struct CheckpointView {
    id: i64,
    /// The log position signed: its event's hash is `hash`.
    position: i64,
    /// Hex.
    hash: String,
    /// Base64.
    signature: String,
    /// The public key it names, base64 (never trusted by verification).
    public_key: String,
    signed_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditCheckpointList)]
struct CheckpointList {
    items: Vec<CheckpointView>,
}

fn view(c: &Checkpoint) -> CheckpointView {
    CheckpointView {
        id: c.id,
        position: c.position,
        hash: hex::encode(&c.hash),
        signature: BASE64.encode(&c.signature),
        public_key: BASE64.encode(&c.public_key),
        signed_at: c.signed_at,
    }
}

request_body! {
    pub struct StartVerification {
        /// The first position to check (default 1; `null` is the default too).
        #[schema(minimum = 1)]
        pub from_position: Option<i64>,
    }
    check |v, body| {
        if body.from_position.is_some_and(|from| from < 1) {
            v.error("from_position", "must be 1 or more");
        }
    }
}

/// Verify the chain and the signed checkpoints in the background (admin). Body (optional):
/// `{"from_position": N}`. 202 with the job and `Location`; follow it for progress and
/// the verdict.
#[utoipa::path(post, path = "/v1/audit/verifications", tag = "audit",
    request_body = StartVerification,
    responses((status = 202, description = "Started", body = verification::Job,
        headers(("Location" = String, description = "The job"))), AdminBodyProblems))]
async fn start_verification(
    State(app): State<AppState>,
    Global(caller, _): Global<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let from = StartVerification::read(&body.json)?
        .from_position
        .unwrap_or(1);
    let id = verification::create(&app.pool, from, &caller.name).await?;
    tokio::spawn(verification::run(
        app.pool.clone(),
        id,
        from,
        app.config.audit.trusted.clone(),
    ));
    let job = verification::get(&app.pool, id)
        .await?
        .ok_or_else(|| ApiError::Internal("a verification vanished as it started".into()))?;
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/audit/verifications/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A verification's state (`running`, `done`, `failed`, `interrupted`), progress and, once
/// done, its verdict (admin).
#[utoipa::path(get, path = "/v1/audit/verifications/{id}", tag = "audit",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = verification::Job),
        RestrictedReadOneProblems))]
async fn verification(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let job = verification::get(&app.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no verification has this id".into()))?;
    Ok(Json(job).into_response())
}

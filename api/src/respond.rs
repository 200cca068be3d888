//! Running a command and answering it: status, `{id, version, position}`, `Location`,
//! `ETag`, and the `Idempotency-Key` protocol around it.

use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_commands::idempotency::{self, Claim};
use ordo_commands::{Actor, CommandMetadata, Committed};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{problem_response, ApiError};
use crate::extract::{CommandBody, CommandHeaders};
use crate::{AppState, Caller};

/// How a successful command answers.
#[derive(Debug, Clone, Copy)]
pub enum Success {
    /// 201 with `Location: <collection>/<id>`.
    Created { collection: &'static str },
    /// 200.
    Ok,
}

impl Success {
    fn status(self) -> StatusCode {
        match self {
            Self::Created { .. } => StatusCode::CREATED,
            Self::Ok => StatusCode::OK,
        }
    }

    fn body(committed: &Committed) -> Value {
        json!({
            "id": committed.id,
            "version": committed.version,
            "position": committed.position,
        })
    }

    /// The response for a stored or fresh success body.
    fn respond(self, status: StatusCode, body: Value, replayed: bool) -> Response {
        let mut response = (status, Json(&body)).into_response();
        let headers = response.headers_mut();
        if let Some(version) = body.get("version").and_then(Value::as_u64) {
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
                headers.insert(header::ETAG, etag);
            }
        }
        if let (Self::Created { collection }, Some(id)) =
            (self, body.get("id").and_then(Value::as_str))
        {
            if let Ok(location) = HeaderValue::from_str(&format!("{collection}/{id}")) {
                headers.insert(header::LOCATION, location);
            }
        }
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

fn replay(success: Success, status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status.is_success() {
        return success.respond(status, body, true);
    }
    let mut response = problem_response(status, &body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The metadata recorded on the events of this request's command. The causation is the
/// command itself (a fresh id per command), never anything the client sent: a client could
/// otherwise claim its events were caused by some other event, which the process manager
/// uses for idempotency.
pub fn metadata(caller: &Caller, headers: &CommandHeaders) -> CommandMetadata {
    CommandMetadata {
        correlation_id: headers.correlation_id,
        causation_id: Uuid::now_v7(),
        actor: Actor {
            key_id: Some(caller.key_id),
            name: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
        },
        request_id: headers.request_id.clone(),
        idempotency_key: headers.idempotency_key.clone(),
        traceparent: Some(headers.traceparent.clone()),
    }
}

/// Run `command` and answer it, honouring `Idempotency-Key`.
pub async fn run_command<F, Fut>(
    app: &AppState,
    caller: &Caller,
    headers: &CommandHeaders,
    body: &CommandBody,
    success: Success,
    command: F,
) -> Response
where
    F: FnOnce(CommandMetadata) -> Fut,
    Fut: Future<Output = Result<Committed, ApiError>>,
{
    let meta = metadata(caller, headers);
    let Some(key) = headers.idempotency_key.as_deref() else {
        return match command(meta).await {
            Ok(committed) => success.respond(success.status(), Success::body(&committed), false),
            Err(e) => e.into_response(),
        };
    };
    let scope = meta.idempotency_scope();
    let claim =
        match idempotency::claim(&app.idempotency_pool, &scope, key, &body.request_hash).await {
            Ok(claim) => claim,
            Err(e) => return ApiError::from(e).into_response(),
        };
    match claim {
        Claim::Mismatch => ApiError::IdempotencyMismatch.into_response(),
        Claim::InFlight => ApiError::IdempotencyInFlight.into_response(),
        Claim::Replay { status, body } => replay(success, status, body),
        Claim::Recovered(guard, committed) => {
            let body = Success::body(&committed);
            if let Err(e) = guard.complete(success.status().as_u16(), &body).await {
                tracing::warn!(error = %e, "could not store a recovered idempotent answer");
            }
            replay(success, success.status().as_u16(), body)
        }
        Claim::Execute(guard) => match command(meta).await {
            Ok(committed) => {
                // The fault-injection hook exists in debug builds only.
                #[cfg(debug_assertions)]
                if app.config.crash_after_commit {
                    tracing::error!("fault injection: aborting between commit and answer");
                    std::process::abort();
                }
                let body = Success::body(&committed);
                if let Err(e) = guard.complete(success.status().as_u16(), &body).await {
                    // The events are committed; a retry recovers the answer from them.
                    tracing::warn!(error = %e, "could not store an idempotent answer");
                }
                success.respond(success.status(), body, false)
            }
            Err(e) if e.is_final() => {
                let (status, problem) = e.problem();
                if let Err(store_err) = guard.complete(status.as_u16(), &problem).await {
                    tracing::warn!(error = %store_err, "could not store an idempotent answer");
                }
                e.into_response()
            }
            Err(e) => {
                if let Err(store_err) = guard.release().await {
                    tracing::warn!(error = %store_err, "could not release an idempotency key");
                }
                e.into_response()
            }
        },
    }
}

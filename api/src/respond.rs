//! Running a command and answering it: status, `{id, version, position}`, `Location`,
//! `ETag`, and the `Idempotency-Key` protocol around it.

use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_commands::appender::{Answer, StoredAnswer};
use ordo_commands::{Actor, CommandError, CommandMetadata, Committed, IdempotentRequest};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{problem_response, ApiError};
use crate::extract::{CommandBody, CommandHeaders};
use crate::{AppState, Caller};

/// What every command answers: the stream, its version after the command (also the
/// `ETag`), and the global position of its last event (usable as `min_position`).
#[derive(Serialize, ToSchema)]
pub struct CommandResult<'a> {
    #[schema(value_type = Uuid)]
    pub id: &'a str,
    pub version: u64,
    #[schema(value_type = u64)]
    pub position: i64,
}

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
        json!(CommandResult {
            id: &committed.id,
            version: committed.version,
            position: committed.position,
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
        idempotent: None,
        traceparent: Some(headers.traceparent.clone()),
        // A scoped key acts in its channel only; a command that creates a stream sets the
        // channel it chose (see `routes::channels::creation_channel`).
        channel: caller.channel.clone(),
    }
}

/// Replay a stored answer if it answers this very request; 422 if the key was used for
/// another.
fn replay_stored(success: Success, stored: StoredAnswer, request_hash: &str) -> Response {
    if stored.request_hash != request_hash {
        return ApiError::IdempotencyMismatch.into_response();
    }
    replay(success, stored.status, stored.body)
}

/// Run `command` and answer it, honouring `Idempotency-Key`: the answer is committed with
/// the command's events (or, for a refusal, alone); a key that already has an answer gets it
/// replayed, found by the appender when the command (or its refusal) is appended.
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
    let mut meta = metadata(caller, headers);
    let Some(key) = headers.idempotency_key.clone() else {
        return match command(meta).await {
            Ok(committed) => success.respond(success.status(), Success::body(&committed), false),
            Err(e) => e.into_response(),
        };
    };
    let scope = meta.idempotency_scope();
    // No lookup before the command: a retry is answered by the appender, which finds the
    // stored answer under its lock before it looks at anything else, so it costs a decision
    // and saves every first request a round trip.
    let Some(_held) = app.in_flight.hold(&scope, &key) else {
        return ApiError::IdempotencyInFlight.into_response();
    };
    meta.idempotent = Some(IdempotentRequest {
        request_hash: body.request_hash.clone(),
        success_status: success.status().as_u16(),
    });
    match command(meta).await {
        Ok(committed) => {
            // The fault-injection hook exists in debug builds only.
            #[cfg(debug_assertions)]
            if app.config.crash_after_commit {
                tracing::error!("fault injection: aborting between commit and answer");
                std::process::abort();
            }
            success.respond(success.status(), Success::body(&committed), false)
        }
        Err(ApiError::Command(CommandError::Answered(stored))) => {
            replay_stored(success, stored, &body.request_hash)
        }
        Err(e) if e.is_final() => {
            let (status, problem) = e.problem();
            let answer = Answer {
                scope,
                key,
                request_hash: body.request_hash.clone(),
                status: status.as_u16(),
                body: Some(problem),
            };
            match app.commands.store().record_answer(answer).await {
                Ok(Some(stored)) => replay_stored(success, stored, &body.request_hash),
                Ok(None) => e.into_response(),
                Err(store_err) => {
                    // Not stored: a retry runs the command again and is refused again.
                    tracing::warn!(error = %store_err, "could not store an idempotent refusal");
                    e.into_response()
                }
            }
        }
        Err(e) => e.into_response(),
    }
}

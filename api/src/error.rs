//! One error type for every handler, one status mapping, one RFC 9457 body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ordo_commands::CommandError;
use ordo_domain::DomainError;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client should wait before retrying when the store is unavailable.
pub const RETRY_AFTER_SECS: u32 = 2;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field, e.g. `lines[1].quantity`; `body` for the whole body.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem. `type` is `urn:ordo:problem:<slug>`; a refused command names the
/// broken rule in its slug (e.g. `urn:ordo:problem:order-not-paid`).
#[derive(Serialize, ToSchema)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    #[schema(rename = "type", example = "urn:ordo:problem:validation")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    /// Present on validation problems (422): one entry per invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<&'a [FieldError]>,
}

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden {
        role: &'static str,
    },
    /// A key scoped to one channel asked for what spans channels (keys, channels,
    /// webhooks, workers, dead letters) or named another channel: 403
    /// `channel-forbidden`.
    ChannelScoped,
    NotFound(String),
    MethodNotAllowed,
    MalformedJson(String),
    Validation(Vec<FieldError>),
    UnsupportedMediaType,
    PayloadTooLarge,
    BadHeader {
        header: &'static str,
        detail: String,
    },
    BadQuery {
        param: &'static str,
        detail: String,
    },
    /// A query parameter given more than once (named here).
    RepeatedQuery(String),
    IdempotencyMismatch,
    /// A read asked for `min_position` and the projection did not get there in time.
    ProjectionBehind {
        projection: &'static str,
        position: i64,
    },
    IdempotencyInFlight,
    Command(CommandError),
    /// A dependency cannot be reached; the detail is logged, never shown (it may name
    /// internals).
    Unavailable(String),
    /// This server is not set up for the operation (say, no signing key); the detail says
    /// what is missing and is shown.
    NotConfigured(String),
    /// This API key (or, without a valid key, this client address) used up its rate limit;
    /// the limiter adds `Retry-After`.
    RateLimited,
    /// More requests in flight than the server takes; [`crate::limits`] adds `Retry-After`.
    Overloaded,
    /// The request took longer than the server allows (a slow body, a stuck dependency).
    RequestTimeout,
    Internal(String),
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        Self::Command(CommandError::Domain(err))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Command(CommandError::from(err))
    }
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// Whether a stored idempotent answer should replay this error, or forget the key so
    /// that a retry runs the command again.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Self::Command(CommandError::Conflict)
                | Self::Command(CommandError::InFlight)
                | Self::Command(CommandError::Answered(_))
                | Self::Command(CommandError::Unavailable(_))
                | Self::Command(CommandError::Internal(_))
                | Self::Unavailable(_)
                | Self::NotConfigured(_)
                | Self::Internal(_)
                | Self::IdempotencyInFlight
                | Self::RateLimited
                | Self::Overloaded
                | Self::RequestTimeout
        )
    }

    /// Status and RFC 9457 body.
    pub fn problem(&self) -> (StatusCode, Value) {
        let (status, slug, title, detail, errors): (
            StatusCode,
            &str,
            String,
            String,
            Option<&[FieldError]>,
        ) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized".into(),
                "send a valid API key as `Authorization: Bearer <key>`".into(),
                None,
            ),
            Self::Forbidden { role } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden".into(),
                format!("the `{role}` role may not do this"),
                None,
            ),
            Self::ChannelScoped => (
                StatusCode::FORBIDDEN,
                "channel-forbidden",
                "Forbidden".into(),
                "this API key is scoped to one channel: it acts in its own channel only, and may not do what spans channels".into(),
                None,
            ),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found".into(),
                what.clone(),
                None,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed".into(),
                "this resource does not accept that method".into(),
                None,
            ),
            Self::MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON".into(),
                detail.clone(),
                None,
            ),
            Self::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request".into(),
                "the request body has invalid fields".into(),
                Some(errors),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type".into(),
                "send the body as `Content-Type: application/json`".into(),
                None,
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large".into(),
                "the request body is larger than this server accepts".into(),
                None,
            ),
            Self::BadHeader { header, detail } => (
                StatusCode::BAD_REQUEST,
                "bad-header",
                "Bad header".into(),
                format!("{header}: {detail}"),
                None,
            ),
            Self::BadQuery { param, detail } => (
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query parameter".into(),
                format!("{param}: {detail}"),
                None,
            ),
            Self::RepeatedQuery(param) => (
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query parameter".into(),
                format!("{param}: given more than once; each parameter takes one value"),
                None,
            ),
            Self::ProjectionBehind { projection, position } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "projection-behind",
                "Read model behind".into(),
                format!("the {projection} read model has not reached position {position} yet; retry shortly"),
                None,
            ),
            Self::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused".into(),
                "this Idempotency-Key was used with a different request".into(),
                None,
            ),
            Self::IdempotencyInFlight => (
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "Request in flight".into(),
                "a request with this Idempotency-Key is still being processed; retry later".into(),
                None,
            ),
            Self::Command(err) => return command_problem(err),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable".into(),
                "the event store or the message broker cannot be reached; retry later".into(),
                None,
            ),
            Self::NotConfigured(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-configured",
                "Not configured".into(),
                detail.clone(),
                None,
            ),
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests".into(),
                "this API key (or, without a valid key, this client address) has used up its request quota; retry after `Retry-After` seconds"
                    .into(),
                None,
            ),
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded".into(),
                "the server is handling as many requests as it takes; retry after `Retry-After` seconds".into(),
                None,
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout".into(),
                "the request took longer than this server allows".into(),
                None,
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error".into(),
                "something went wrong on our side; it has been logged".into(),
                None,
            ),
        };
        (status, problem_body(status, slug, &title, &detail, errors))
    }
}

fn command_problem(err: &CommandError) -> (StatusCode, Value) {
    let (status, slug, title, detail): (StatusCode, &str, String, String) = match err {
        CommandError::Domain(DomainError::NotFound { aggregate }) => (
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found".into(),
            format!("no {aggregate} has this id"),
        ),
        CommandError::Domain(DomainError::AlreadyExists { aggregate }) => (
            StatusCode::CONFLICT,
            "already-exists",
            "Already exists".into(),
            format!("a {aggregate} with this id already exists"),
        ),
        CommandError::Domain(DomainError::Refused { rule, detail }) => {
            (StatusCode::CONFLICT, rule, title_of(rule), detail.clone())
        }
        CommandError::Domain(DomainError::Invalid { field, message }) => {
            let errors = [FieldError {
                field: field.clone(),
                message: message.clone(),
            }];
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let body = problem_body(
                status,
                "validation",
                "Invalid request",
                "the request body has invalid fields",
                Some(&errors),
            );
            return (status, body);
        }
        CommandError::VersionMismatch { expected, actual } => (
            StatusCode::PRECONDITION_FAILED,
            "stale-version",
            "Stale version".into(),
            format!("If-Match named version {expected}; the stream is at version {actual}"),
        ),
        CommandError::Conflict => (
            StatusCode::CONFLICT,
            "write-conflict",
            "Write conflict".into(),
            "concurrent commands kept changing this stream; retry".into(),
        ),
        CommandError::Unavailable(_) => {
            return ApiError::Unavailable(String::new()).problem();
        }
        CommandError::Internal(_) => return ApiError::Internal(String::new()).problem(),
        // Answered is replayed by the idempotency protocol before it gets here.
        CommandError::InFlight | CommandError::Answered(_) => {
            return ApiError::IdempotencyInFlight.problem()
        }
    };
    (status, problem_body(status, slug, &title, &detail, None))
}

/// `order-not-paid` → `Order not paid`.
fn title_of(rule: &str) -> String {
    let words = rule.replace('-', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => words,
    }
}

pub fn problem_type(slug: &str) -> String {
    format!("urn:ordo:problem:{slug}")
}

fn problem_body(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: &str,
    errors: Option<&[FieldError]>,
) -> Value {
    json!(Problem {
        kind: problem_type(slug),
        title,
        status: status.as_u16(),
        detail,
        errors,
    })
}

/// A problem body as a response (also used to replay stored problems).
pub fn problem_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(detail) | Self::Command(CommandError::Internal(detail)) => {
                let error = ordo_runtime::telemetry::redact(detail);
                tracing::error!(error = %error, "request failed");
            }
            Self::Unavailable(detail) | Self::Command(CommandError::Unavailable(detail)) => {
                let error = ordo_runtime::telemetry::redact(detail);
                tracing::warn!(error = %error, "event store unavailable");
            }
            _ => {}
        }
        let (status, body) = self.problem();
        problem_response(status, &body)
    }
}

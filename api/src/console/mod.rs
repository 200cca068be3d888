//! The console at `/console`: server-rendered pages (maud) for support, analysts and
//! operators, over the API's own policies and functions. See ADR 0013.
//!
//! Every console response carries a Content-Security-Policy without inline script,
//! `X-Frame-Options: DENY` and a `Referrer-Policy`; signed-in requests are rate limited by
//! their API key through the API's limiter. Every POST carries a CSRF token.

mod analytics;
mod chart;
mod customer;
mod keys;
mod layout;
mod order;
mod projections;
mod search;
pub mod session;
mod signin;
mod timeline;
mod webhooks;
mod workers;

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::{ApiError, AppState};
use session::{cookie, lookup, SESSION_COOKIE};

pub use projections::LagHistory;

/// Every console route, with its security headers and rate limit.
pub fn router(app: &AppState) -> Router<AppState> {
    let lag = LagHistory::start(app.pool.clone());
    Router::new()
        .route("/console", get(search::home))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .merge(signin::router())
        .merge(search::router())
        .merge(order::router())
        .merge(customer::router())
        .merge(projections::router())
        .merge(workers::router())
        .merge(webhooks::router())
        .merge(analytics::router())
        .merge(keys::router())
        .layer(axum::Extension(lag))
        .layer(middleware::from_fn_with_state(app.clone(), limit))
        .layer(middleware::from_fn(security_headers))
}

/// Why a console request failed, shown as a page (never a stack trace).
#[derive(Debug)]
pub enum ConsoleError {
    /// No live session: go to the sign-in page.
    SignIn,
    /// The session's role may not see this page (the API would answer 403).
    Forbidden {
        role: &'static str,
    },
    /// A form arrived without this session's CSRF token.
    Csrf,
    NotFound(String),
    BadInput(String),
    /// Anything the API would answer with a problem.
    Api(ApiError),
    Internal(String),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(err: sqlx::Error) -> Self {
        Self::Api(err.into())
    }
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<ordo_commands::CommandError> for ConsoleError {
    fn from(err: ordo_commands::CommandError) -> Self {
        Self::Api(err.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::SignIn => return Redirect::to("/console/sign-in").into_response(),
            Self::Forbidden { role } => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("The {role} role may not see or do this. Sign in with another key."),
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from a page of this session. Go back, reload and try again."
                    .into(),
            ),
            Self::NotFound(detail) => (StatusCode::NOT_FOUND, "Not found", detail),
            Self::BadInput(detail) => (StatusCode::BAD_REQUEST, "Bad input", detail),
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "console failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something failed",
                    "The failure was logged.".into(),
                )
            }
            Self::Api(err) => {
                let response = err.into_response();
                let status = response.status();
                if status.is_server_error() {
                    // The API error logged its own detail; the page says what to do.
                    (status, "Unavailable", "Try again in a moment.".into())
                } else {
                    (status, "Refused", format!("The request was refused ({status})."))
                }
            }
        };
        (status, layout::bare(title, &detail)).into_response()
    }
}

/// A submitted `application/x-www-form-urlencoded` form.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A field's value trimmed, `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let urlencoded = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !urlencoded {
            return Err(ConsoleError::BadInput("expected a form".into()));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ConsoleError::BadInput("the form is too large".into()))?;
        Ok(Self(
            url::form_urlencoded::parse(&bytes).into_owned().collect(),
        ))
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every console response carries, errors and redirects included.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Signed-in console requests spend their API key's tokens, as the same key would through
/// `/v1`; the session found is left for the page's extractor.
async fn limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(token) = cookie(&parts, SESSION_COOKIE).filter(|t| t.len() <= 128) {
        match lookup(&app.pool, token).await {
            Ok(Some(session)) => {
                if let Some(limiter) = &app.rate_limiter {
                    let decision = limiter.check(session.caller.key_id, Instant::now());
                    if !decision.allowed {
                        let mut response = (
                            StatusCode::TOO_MANY_REQUESTS,
                            layout::bare("Slow down", "Too many requests for this key."),
                        )
                            .into_response();
                        response.headers_mut().insert(
                            header::RETRY_AFTER,
                            HeaderValue::from(decision.retry_after_secs),
                        );
                        return response;
                    }
                }
                parts.extensions.insert(session);
            }
            Ok(None) => {}
            Err(err) => return err.into_response(),
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        bytes,
    )
        .into_response()
}

/// After a successful POST: see the page again (303), so a reload does not repeat it.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// 404, as for a stream that does not exist, unless the session's key sees the channel of
/// stream `aggregate_type`/`id` (the API's rule: a scoped key sees its own channel only).
pub(crate) async fn visible_stream(
    app: &AppState,
    session: &session::Session,
    aggregate_type: &str,
    id: &str,
) -> Result<(), ConsoleError> {
    let channel = app
        .commands
        .store()
        .stream_channel(aggregate_type, id)
        .await?;
    match channel {
        Some(channel) if !session.caller.sees(&channel) => Err(ConsoleError::NotFound(format!(
            "No {aggregate_type} has this id."
        ))),
        _ => Ok(()),
    }
}

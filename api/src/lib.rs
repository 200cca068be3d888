//! The HTTP API (docs/API.md): commands, audit reads, health. Every error is an RFC 9457
//! problem; every response carries `x-request-id`.

pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod read_wait;
pub mod request_id;
pub mod respond;
pub mod routes;
pub mod server;
pub mod validate;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::IntoResponse;
use axum::Router;
use ordo_commands::Commands;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{OnFailure, TraceLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{create_key, Caller, KeyCache, Role};
pub use error::ApiError;
use ordo_runtime::readiness::Readiness;
pub use rate_limit::{RateLimit, RateLimiter};

/// Settings the API needs at run time.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit: usize,
    /// Test-only fault injection: abort the process right after a command with an
    /// `Idempotency-Key` committed, before its answer is stored or sent. Ignored by release
    /// builds, which do not contain the hook.
    pub crash_after_commit: bool,
    /// How long a read with `min_position` waits for its projection before answering 503.
    pub read_wait: std::time::Duration,
    /// Where the workers' streams are, for the operations routes.
    pub workers: ordo_workers::WorkerConfig,
    /// Requests per API key and window; `None` disables limiting.
    pub rate_limit: Option<RateLimit>,
    /// Whether webhook URLs may name non-public addresses (`ORDO_WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_allow_private: bool,
    /// Requests per client address and window for requests without a valid key; `None`
    /// disables that limit.
    pub anonymous_rate_limit: Option<RateLimit>,
    /// The request timeout and the in-flight limit.
    pub limits: limits::RequestLimits,
    /// Mark console cookies `Secure`: set when the console is reached over TLS (directly or
    /// through a proxy), so browsers never send the session over plain HTTP.
    pub console_secure_cookie: bool,
    /// `/metrics` has a listener of its own (`ORDO_METRICS_ADDR`): the API's address does
    /// not serve it.
    pub metrics_elsewhere: bool,
    /// The master keys personal data is sealed with (ADR 0020); `None`: encryption of new
    /// personal data is off (and `/readyz` says so).
    pub master_keys: Option<ordo_commands::privacy::MasterKeys>,
    /// The checkpoint signing key (none: signing is off) and the key verifications trust.
    pub audit: ordo_commands::checkpoint::AuditKeys,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            crash_after_commit: false,
            read_wait: std::time::Duration::from_secs(5),
            workers: ordo_workers::WorkerConfig::over(&ordo_workers::NatsSettings::default()),
            rate_limit: None,
            webhook_allow_private: false,
            anonymous_rate_limit: None,
            limits: limits::RequestLimits::default(),
            console_secure_cookie: false,
            metrics_elsewhere: false,
            master_keys: None,
            audit: Default::default(),
        }
    }
}

/// Shared by every handler: one reference-counted pointer, so that the clone each
/// middleware layer and handler takes is one counter, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    /// The database: the event store's tables and `auth.api_keys`.
    pub pool: PgPool,
    /// The `Idempotency-Key`s this process is running commands for.
    pub in_flight: ordo_commands::idempotency::InFlight,
    /// Executes commands against the event store.
    pub commands: Arc<Commands>,
    /// API keys recently seen.
    pub keys: KeyCache,
    /// Worker status, replay and dead letters (connects to NATS on first use).
    pub workers: Arc<ordo_workers::ops::WorkersAdmin>,
    /// Token buckets per API key, when limiting is on.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Token buckets per client address for requests without a valid key.
    pub anonymous_limiter: Option<Arc<rate_limit::AddressLimiter>>,
    /// Requests in flight, and their deadline.
    pub gate: limits::Gate,
    /// Role states and the NATS probe, for `/readyz`.
    pub readiness: Readiness,
    /// Wakes reads waiting for `min_position` when a projection moves.
    pub progress: read_wait::Progress,
    pub config: Arc<ApiConfig>,
}

impl AppState {
    pub fn new(pool: PgPool, config: ApiConfig, readiness: Readiness) -> Self {
        Self(Arc::new(Shared {
            in_flight: Default::default(),
            commands: Arc::new(Commands::with_keys(
                pool.clone(),
                ordo_commands::privacy::Keyring::new(pool.clone(), config.master_keys.clone()),
            )),
            pool,
            keys: KeyCache::default(),
            workers: Arc::new(ordo_workers::ops::WorkersAdmin::new(config.workers.clone())),
            rate_limiter: config.rate_limit.map(|l| Arc::new(RateLimiter::new(l))),
            anonymous_limiter: config
                .anonymous_rate_limit
                .map(|l| Arc::new(rate_limit::AddressLimiter::new(l))),
            gate: limits::Gate::new(config.limits),
            readiness,
            progress: read_wait::Progress::default(),
            config: Arc::new(config),
        }))
    }
}

use request_id::REQUEST_ID;

/// How a failed response is logged. A 503 is the documented "retry later": not ready yet, a
/// read model behind `min_position`, the event store or NATS away (which the handler logs
/// with its cause). It is a state the client is told to wait out, so a warning; every other
/// failure (a 500, a panic) is an error.
#[derive(Debug, Clone, Copy)]
struct LogFailure;

/// tower-http's own target for these lines, so that `ORDO_LOG` filters keep applying.
const TRACE_TARGET: &str = "tower_http::trace::on_failure";

impl OnFailure<ServerErrorsFailureClass> for LogFailure {
    fn on_failure(
        &mut self,
        class: ServerErrorsFailureClass,
        latency: Duration,
        _: &tracing::Span,
    ) {
        let latency = format!("{} ms", latency.as_millis());
        let retry_later = matches!(
            class,
            ServerErrorsFailureClass::StatusCode(status)
                if status == axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        if retry_later {
            tracing::warn!(target: TRACE_TARGET, classification = %class, %latency, "response failed");
        } else {
            tracing::error!(target: TRACE_TARGET, classification = %class, %latency, "response failed");
        }
    }
}

/// The span of one request: a child of the caller's `traceparent` when it sent a valid one.
/// Only the path is recorded, never the query (`?email=` is personal data); the route
/// template is added once routing has matched.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        http.route = tracing::field::Empty,
        request.id = %request_id,
    );
    if let Some(traceparent) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|tp| extract::valid_traceparent(tp))
    {
        ordo_runtime::telemetry::continue_trace(&span, traceparent);
    }
    span
}

/// The operations routes alone — `/healthz`, `/readyz`, `/metrics` — for a process that runs
/// no API role, so every process can be probed and scraped on its HTTP address.
pub fn ops_router(state: AppState) -> Router {
    ordo_runtime::metrics::install();
    let mut ops = routes::health::router();
    if !state.config.metrics_elsewhere {
        ops = ops.routes(routes!(metrics::scrape));
    }
    Router::new()
        .merge(ops.split_for_parts().0)
        .fallback(|| async { ApiError::NotFound("no such route".into()).into_response() })
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(request_id::check))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_failure(LogFailure),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Every route with its OpenAPI description: one list, so the two cannot diverge.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    api_with_metrics(true)
}

/// The routes, with `/metrics` or without it (when it has a listener of its own; the
/// document still describes it, wherever it is served).
fn api_with_metrics(metrics: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::orders::router())
        .merge(routes::payments::router())
        .merge(routes::customers::router())
        .merge(routes::audit::router())
        .merge(routes::integrity::router())
        .merge(routes::projections::router())
        .merge(routes::analytics::router())
        .merge(routes::webhooks::router())
        .merge(routes::keys::router())
        .merge(routes::channels::router())
        .merge(routes::workers::router())
        .merge(routes::notifications::router())
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs));
    if metrics {
        api = api.routes(routes!(metrics::scrape));
    }
    let (router, mut spec) = api.split_for_parts();
    openapi::finish(&mut spec);
    (router.merge(openapi::docs_router()), spec)
}

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    ordo_runtime::metrics::install();
    let body_limit = state.config.body_limit;
    let trace = TraceLayer::new_for_http()
        .make_span_with(request_span)
        .on_failure(LogFailure);
    api_with_metrics(!state.config.metrics_elsewhere)
        .0
        .merge(console::router(&state))
        .fallback(|| async { ApiError::NotFound("no such route".into()).into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .with_state(state.clone())
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(request_id::check))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn_with_state(
                    state.gate.clone(),
                    limits::limit,
                ))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("handler panicked".into()).into_response()
                })),
        )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;

    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The level `LogFailure` logs a failure of this class at.
    fn level(class: ServerErrorsFailureClass) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            LogFailure.on_failure(class, Duration::from_millis(3), &tracing::Span::none());
        });
        let line: serde_json::Value = serde_json::from_slice(&buffer.0.lock().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "response failed");
        line["level"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn only_a_503_is_logged_below_error() {
        let status =
            |code| ServerErrorsFailureClass::StatusCode(StatusCode::from_u16(code).unwrap());
        assert_eq!(level(status(503)), "WARN");
        assert_eq!(level(status(500)), "ERROR");
        assert_eq!(level(status(504)), "ERROR");
        let broken = ServerErrorsFailureClass::Error("connection reset".into());
        assert_eq!(level(broken), "ERROR");
    }
}

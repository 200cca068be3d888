//! Prometheus over HTTP: the middleware that counts and times every request, and
//! `GET /metrics` (text format 0.0.4, no API key). The recorder itself is the process's
//! ([`ordo_runtime::metrics`]).
//!
//! A scrape reads no database: the components keep their own gauges as they go (each
//! projection's leading runner its position and lag, the relay leader its line and lag,
//! the delivery pool and mail sender their queues), and the scrape only adds the pool's
//! in-memory counts. So scraping costs the same however far behind a reader is, and
//! answers while the database is slow or its pool exhausted. Each process exposes the
//! gauges of the components it runs.
//!
//! With `ORDO_METRICS_ADDR` set, [`metrics_router`] serves `/metrics` on a listener of its
//! own and the API's address does not serve it.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::gauge;
use ordo_runtime::metrics::CONTENT_TYPE;
use sqlx::PgPool;

use crate::AppState;

/// Count and time every request by method, route template (never the raw path, which would
/// make a series per id) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    tracing::Span::current().record("http.route", route.as_str());
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods outside the standard set would each make a series: they share one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn scrape(State(app): State<AppState>) -> Response {
    sample_pool("main", &app.pool);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        ordo_runtime::metrics::render(),
    )
        .into_response()
}

fn sample_pool(name: &'static str, pool: &PgPool) {
    let open = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    gauge!("ordo_db_pool_connections", "pool" => name, "state" => "idle").set(idle);
    gauge!("ordo_db_pool_connections", "pool" => name, "state" => "in_use")
        .set((open - idle).max(0.0));
    gauge!("ordo_db_pool_max_connections", "pool" => name)
        .set(f64::from(pool.options().get_max_connections()));
}

/// `/metrics` alone, for its own listener (`ORDO_METRICS_ADDR`): no other route, no API
/// key, no rate limit.
pub fn metrics_router(state: AppState) -> axum::Router {
    ordo_runtime::metrics::install();
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async { crate::ApiError::NotFound("no such route".into()).into_response() })
        .with_state(state)
}

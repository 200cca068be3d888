//! Prometheus over HTTP: the middleware that counts and times every request, and
//! `GET /metrics` (text format 0.0.4, no API key). The recorder itself is the process's
//! ([`ordo_runtime::metrics`]).
//!
//! The gauges that describe shared state — database pools, projection and relay lag — are
//! sampled when `/metrics` is scraped, with cheap queries, rather than kept up to date by
//! each role.

use std::time::{Duration, Instant};

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
    // A slow or unreachable database must not make the scrape fail: the gauges keep their
    // last values and the rest is still served.
    let lag = sample_lag(&app.pool, &app.config.workers.stream);
    if tokio::time::timeout(Duration::from_secs(2), lag)
        .await
        .is_err()
    {
        tracing::debug!("projection and relay lag not sampled in time");
    }
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

async fn sample_lag(pool: &PgPool, relay_stream: &str) {
    match ordo_projections::status::all(pool).await {
        Ok(statuses) => {
            for status in statuses {
                let name = status.name;
                gauge!("ordo_projection_position", "projection" => name.clone())
                    .set(status.position as f64);
                gauge!("ordo_projection_lag_events", "projection" => name.clone())
                    .set(status.lag_events as f64);
                gauge!("ordo_projection_lag_seconds", "projection" => name).set(status.lag_seconds);
            }
        }
        Err(e) => tracing::debug!(error = %e, "projection status not sampled"),
    }
    match ordo_workers::relay::lag(pool, relay_stream).await {
        Ok(Some(events)) => gauge!("ordo_relay_lag_events").set(events as f64),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "relay lag not sampled"),
    }
}

//! Prometheus metrics: the process-wide recorder behind the `metrics` facade, the HTTP
//! middleware, and `GET /metrics` (text format 0.0.4, no API key).
//!
//! Every crate records through the facade (`metrics::counter!`); the recorder is installed
//! once per process, however many applications the process builds (tests build many). The
//! gauges that describe shared state — database pools, projection and relay lag — are sampled
//! when `/metrics` is scraped, with cheap queries, rather than kept up to date by each role.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::AppState;

/// Histogram buckets, in seconds: from a fast read (1 ms) to a slow webhook (10 s).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of `ordo_append_batch_size`, in appends per group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 2048.0,
];

/// The Prometheus text exposition format `/metrics` answers in.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder, once; later calls return the same handle. `None` when
/// another recorder was installed first (then metrics go there, and `/metrics` is empty).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ordo_append_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                }) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; histograms become summaries");
                    PrometheusBuilder::new()
                }
            };
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Histograms keep samples until upkeep folds them in: do it in the background as well as
/// on every scrape, so an unscraped process does not grow.
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// Help texts, and the families without labels at zero so they show before anything happens.
fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency."
    );
    describe_counter!(
        "ordo_commands_total",
        "Commands executed, by command and outcome."
    );
    describe_histogram!(
        "ordo_command_duration_seconds",
        Unit::Seconds,
        "Command latency, decide and append."
    );
    describe_counter!("ordo_events_appended_total", "Events appended to the log.");
    describe_histogram!(
        "ordo_append_batch_size",
        "Appends written by one group commit (one transaction, one commit)."
    );
    describe_gauge!(
        "ordo_projection_position",
        "Global position of the last event a projection applied."
    );
    describe_gauge!(
        "ordo_projection_lag_events",
        "Events in the log a projection has not applied."
    );
    describe_gauge!(
        "ordo_projection_lag_seconds",
        "Age of the oldest event a projection has not applied."
    );
    describe_counter!(
        "ordo_relay_published_total",
        "Events the relay published to JetStream (acknowledged)."
    );
    describe_gauge!(
        "ordo_relay_lag_events",
        "Events in the log beyond the relay's stored checkpoint (unpublished, or published but not final yet)."
    );
    describe_counter!(
        "ordo_worker_processed_total",
        "Messages a worker handled and acknowledged."
    );
    describe_counter!(
        "ordo_worker_failed_total",
        "Handler failures (each one redelivered or dead-lettered)."
    );
    describe_counter!(
        "ordo_worker_dead_lettered_total",
        "Messages moved to the dead-letter stream."
    );
    describe_histogram!(
        "ordo_worker_handler_duration_seconds",
        Unit::Seconds,
        "Worker handler latency."
    );
    describe_gauge!(
        "ordo_db_pool_connections",
        "Open database connections, idle or in use."
    );
    describe_gauge!("ordo_db_pool_max_connections", "Database pool size limit.");
    describe_counter!(
        "ordo_rate_limited_total",
        "Requests refused by rate limiting."
    );
    metrics::counter!("ordo_relay_published_total").absolute(0);
    metrics::counter!("ordo_rate_limited_total").absolute(0);
}

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
    let Some(handle) = install() else {
        return (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            String::new(),
        )
            .into_response();
    };
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
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        handle.render(),
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

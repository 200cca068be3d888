//! The process-wide Prometheus recorder behind the `metrics` facade.
//!
//! Every crate records through the facade (`metrics::counter!`); the recorder is installed
//! once per process, however many applications the process builds (tests build many), and
//! [`render`] gives the text `/metrics` answers.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// The current values in the Prometheus text format ([`CONTENT_TYPE`]); empty when another
/// recorder was installed first.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

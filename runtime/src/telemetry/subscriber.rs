//! Logs and traces. Logs: `ORDO_LOG` filters (default `info`), to stderr so stdout stays for
//! command output; JSON lines when stderr is not a terminal. Traces: exported over OTLP
//! (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as service `OTEL_SERVICE_NAME`
//! (default `ordo`); the same filter decides which spans are exported.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The exporting provider, kept so that [`shutdown`] can flush it.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn init() {
    let filter = EnvFilter::try_from_env("ORDO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if std::io::stderr().is_terminal() {
        fmt.boxed()
    } else {
        fmt.json().flatten_event(true).boxed()
    };
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (otel, otel_error) = match endpoint.map(|_| tracer_provider(None)) {
        None => (None, None),
        Some(Ok(provider)) => {
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("ordo"));
            let _ = PROVIDER.set(provider);
            (Some(layer), None)
        }
        Some(Err(e)) => (None, Some(e)),
    };
    let result = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .with(filter)
        .try_init();
    // Already initialised (tests call this more than once): keep the first.
    if result.is_ok() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(e) = otel_error {
            tracing::warn!(error = %e, "traces are not exported: the OTLP exporter cannot be built");
        }
    }
}

/// A provider exporting spans in batches over OTLP HTTP/protobuf: to `endpoint` (the full
/// traces URL) when given, else where the `OTEL_EXPORTER_OTLP_*` variables say.
pub fn tracer_provider(endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name())
                .build(),
        )
        .build())
}

/// `OTEL_SERVICE_NAME`, or `ordo`.
pub fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "ordo".into())
}

/// Export the spans still buffered (before the process exits).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::debug!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

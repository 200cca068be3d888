//! Logs and traces: the subscriber a process installs once, the trace context that crosses
//! process boundaries, and redaction of personal data before it reaches a log.

mod propagation;
mod subscriber;

pub use propagation::{
    continue_trace, current_traceparent, outgoing_traceparent, redact, traceparent_of,
};
pub use subscriber::{init, service_name, shutdown, tracer_provider};

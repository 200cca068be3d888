//! Process plumbing, kept out of the feature crates: every crate above the domain records
//! through it, and only the composition root (`ordo`) starts it.
//!
//! - [`telemetry`]: the log/trace subscriber ([`telemetry::init`]), W3C trace-context
//!   propagation across HTTP, the log and NATS, and redaction of what must never be logged.
//! - [`metrics`]: the process-wide Prometheus recorder behind the `metrics` facade.
//! - [`process`]: the life cycle of the process roles this process runs (`api`,
//!   `projector.orders`, `relay`, `worker.analytics`, …) as `/readyz` reports them. A process
//!   role is what a process does; it has nothing to do with an API key's role.
//! - [`readiness`]: what `/readyz` reports besides the database: those process roles and a
//!   probe of the NATS connection.

pub mod metrics;
pub mod process;
pub mod readiness;
pub mod telemetry;

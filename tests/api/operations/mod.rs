//! Running Ordo: readiness, start-up and shutdown, metrics, rate limits, secrets and the
//! OpenAPI document.

pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod rate_limits;
pub mod readiness;
pub mod secrets;
pub mod shutdown;
pub mod startup;

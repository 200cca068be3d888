//! End-to-end tests of the HTTP API against real PostgreSQL: one fresh database per test.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod browser;
mod helpers;
mod nats;

mod advisories;
mod analytics_rebuild;
mod audit;
mod auth;
mod channels;
mod checkpoints;
mod concurrency;
mod console;
mod console_ops;
mod crash;
mod deliveries;
mod errors;
mod fuzz_findings;
mod hostile_input;
mod idempotency;
mod keys;
mod lifecycle;
mod limits;
mod metrics;
mod money;
mod notifications;
mod openapi;
mod privacy;
mod privacy_e2e;
mod process_manager;
mod projector;
mod rate_limits;
mod read_models;
mod readiness;
mod rebuilds;
mod relay;
mod schemas;
mod secrets;
mod shutdown;
mod ssrf;
mod startup;
mod store;
mod tamper;
mod tls;
mod trace_context;
mod verifications;
mod webhooks;
mod worker_ops;
mod workers;
mod write_path;

//! The write path: commands over HTTP, their errors and limits, idempotency, concurrency,
//! the event store and its schemas, keys, roles and channels.

pub mod auth;
pub mod channels;
pub mod concurrency;
pub mod crash;
pub mod errors;
pub mod fuzz_findings;
pub mod hostile_input;
pub mod idempotency;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod money;
pub mod schemas;
pub mod store;
pub mod write_path;

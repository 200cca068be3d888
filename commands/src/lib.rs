//! Executing commands: cqrs-es in event-store mode over postgres-es on
//! `event_store.events`, with metadata on every event, optimistic concurrency
//! (`If-Match` and bounded internal retries) and exactly-once `Idempotency-Key`s.
//!
//! This crate owns the `event_store` schema; nothing else writes it.

pub mod appender;
pub mod audit;
pub mod chain;
pub mod channels;
pub mod checkpoint;
pub mod db;
pub mod error;
pub mod feed;
pub mod head;
pub mod history;
pub mod idempotency;
pub mod leader;
pub mod metadata;
pub mod privacy;
pub mod service;
pub mod store;
pub mod verification;
pub mod witness;

pub use error::CommandError;
pub use metadata::{Actor, CommandMetadata, IdempotentRequest};
pub use service::Commands;
pub use store::{Committed, EventStore, Versioned};

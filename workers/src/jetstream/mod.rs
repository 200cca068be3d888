//! The JetStream machinery every worker runs on: durable pull consumers with explicit
//! acks, batching, bounded redelivery with backoff, an idempotency record per worker, dead
//! letters and max-deliveries advisories. It knows no worker by name: a worker is a
//! [`Policy`] (its name, processed table, what it can never handle, its handler),
//! stated in the worker's own module, and a [`Runner`] runs one.
//!
//! - `runner.rs`: connecting (streams and consumers created or updated and checked), the
//!   pull loop, `step` for tests and benchmarks.
//! - `batch.rs`: settling received messages, together, or one by one after a failure.
//! - `dead_letter.rs`, `advisory.rs`: the two ways a message becomes a dead letter.
//! - `message.rs`: the event a message carries; `config.rs`: the settings.

mod advisory;
mod batch;
mod config;
mod dead_letter;
mod message;
mod policy;
mod runner;

pub use advisory::{AdvisoryOutcome, MaxDeliveriesAdvisory};
pub use config::WorkerConfig;
pub use message::{headers_json, Body, Delivered};
pub use policy::{pattern_matches, HandleError, Policy};
pub use runner::{Runner, WorkerError};

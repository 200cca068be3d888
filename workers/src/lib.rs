//! Feed consumers with side effects: the relay to JetStream, the order ⇄ payment process
//! manager, and the JetStream workers (notification, analytics, integration).
//!
//! Unlike read models, these are never replayed by a rebuild: their effects (commands,
//! e-mails, webhooks) happen once, guarded by their own checkpoints and idempotency records.
//!
//! `jetstream` is the machinery every worker runs on and names none of them; each worker's
//! module (`analytics`, `integration`, `notification`) states its policy; `worker` lists
//! them for configuration and operations.

pub mod analytics;
pub mod egress;
pub mod integration;
pub mod jetstream;
pub mod mailer;
pub mod nats;
mod newest;
pub mod notification;
pub mod ops;
pub mod process_manager;
pub mod relay;
pub mod retention;
pub mod retry;
pub mod tls;
pub mod worker;

pub use jetstream::{AdvisoryOutcome, MaxDeliveriesAdvisory, Runner as WorkerRunner, WorkerConfig};
pub use nats::NatsSettings;
pub use process_manager::ProcessManager;
pub use relay::{Relay, RelayConfig};
pub use worker::Worker;

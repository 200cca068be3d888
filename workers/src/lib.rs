//! Feed consumers with side effects. Today: the order ⇄ payment process manager. Next (the
//! NATS issue): the relay to JetStream and the notification, analytics and integration
//! workers.
//!
//! Unlike read models, these are never replayed by a rebuild: their effects (commands,
//! e-mails, webhooks) happen once, guarded by their own checkpoints and idempotency records.

pub mod analytics;
pub mod consumer;
pub mod egress;
pub mod integration;
pub mod notification;
pub mod ops;
pub mod process_manager;
pub mod relay;
pub mod tls;

pub use consumer::{AdvisoryOutcome, MaxDeliveriesAdvisory, Worker, WorkerConfig, WorkerRunner};
pub use process_manager::ProcessManager;
pub use relay::{Relay, RelayConfig};

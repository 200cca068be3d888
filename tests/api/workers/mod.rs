//! The relay and the workers on real NATS JetStream: notifications, webhooks and their
//! deliveries, analytics, the process manager, dead letters and their operation, TLS, SSRF
//! and trace context across them.

pub mod advisories;
pub mod analytics_rebuild;
pub mod deliveries;
pub mod jetstream;
pub mod notifications;
pub mod process_manager;
pub mod relay;
pub mod ssrf;
pub mod tls;
pub mod trace_context;
pub mod webhooks;
pub mod worker_ops;

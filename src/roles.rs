//! The long-running tasks of the process roles that need more than a component's own
//! `run`: waiting for NATS before the relay or a worker can start, and housekeeping.

use std::sync::Arc;
use std::time::Duration;

use ordo_runtime::process::{ProcessRoleState, ProcessRoles};
use ordo_workers::jetstream::Policy;
use ordo_workers::{Relay, RelayConfig, WorkerConfig, WorkerRunner};
use sqlx::PgPool;
use tokio::sync::watch;

/// Run the relay, connecting again until NATS answers or the process stops.
pub(crate) async fn run_relay(
    pool: PgPool,
    config: RelayConfig,
    mut stopped: watch::Receiver<bool>,
    roles: ProcessRoles,
) {
    while !*stopped.borrow() {
        match Relay::connect(pool.clone(), config.clone()).await {
            Ok(relay) => {
                roles.set("relay", ProcessRoleState::Running);
                return relay.run(stopped).await;
            }
            Err(e) => tracing::warn!(error = %e, "relay cannot start yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Run a worker, connecting again (the stream may not exist before the relay made it)
/// until it is up or the process stops.
pub(crate) async fn run_worker(
    pool: PgPool,
    policy: Arc<dyn Policy>,
    config: WorkerConfig,
    mut stopped: watch::Receiver<bool>,
    (roles, name): (ProcessRoles, String),
) {
    while !*stopped.borrow() {
        match WorkerRunner::connect(pool.clone(), policy.clone(), config.clone()).await {
            Ok(runner) => {
                roles.set(&name, ProcessRoleState::Running);
                return runner.run(stopped).await;
            }
            Err(e) => tracing::warn!(worker = policy.name(), error = %e, "worker cannot start yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Forget idempotency keys past their retention, every ten minutes.
pub(crate) async fn purge_idempotency_keys(pool: PgPool) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match ordo_commands::idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
        }
    }
}

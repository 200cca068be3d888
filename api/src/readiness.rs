//! What `/readyz` reports: PostgreSQL, NATS and the state of each role this process runs.
//! The composition root (`src/lib.rs`) registers the roles and updates their state.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// A role task's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleState {
    /// Spawned, not yet connected to what it needs (e.g. NATS for the relay).
    Starting,
    Running,
    /// Shutdown began: finishing in-flight requests or the current batch.
    Stopping,
    Stopped,
    /// Ended without being asked to (a panic, or it gave up).
    Failed,
}

/// The roles of this process, each by name (`api`, `projector.orders`, `relay`,
/// `worker.analytics`, …), shared between the role tasks and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    states: Arc<RwLock<BTreeMap<String, RoleState>>>,
}

impl Roles {
    pub fn set(&self, role: &str, state: RoleState) {
        let mut states = match self.states.write() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        states.insert(role.to_owned(), state);
    }

    /// Move every role that is not already down to `Stopping`.
    pub fn stopping(&self) {
        let mut states = match self.states.write() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        for state in states.values_mut() {
            if matches!(state, RoleState::Starting | RoleState::Running) {
                *state = RoleState::Stopping;
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, RoleState> {
        match self.states.read() {
            Ok(states) => states.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A NATS connection kept only to report whether the server is reachable.
#[derive(Debug, Clone)]
pub struct NatsProbe {
    pub client: async_nats::Client,
    /// Whether this process needs NATS to be ready (it runs the relay or workers). The API
    /// alone does not: commands keep working while NATS is down.
    pub required: bool,
}

impl NatsProbe {
    /// Connects in the background (and reconnects for ever); never fails or waits.
    pub async fn start(url: &str, required: bool) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await?;
        Ok(Self { client, required })
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Everything `/readyz` looks at besides the database pool.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub roles: Roles,
    /// `None` when this process was built without one (then NATS is not reported).
    pub nats: Option<NatsProbe>,
}

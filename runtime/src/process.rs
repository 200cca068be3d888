//! The process roles this process runs and the state of each, as `/readyz` reports them.
//! The composition root (`src/lib.rs`) registers the roles and updates their state; a
//! process role (what a process does: `api`, `relay`, …) is not an API key's role (who may
//! call what).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// A process role's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRoleState {
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
pub struct ProcessRoles {
    states: Arc<RwLock<BTreeMap<String, ProcessRoleState>>>,
}

impl ProcessRoles {
    pub fn set(&self, role: &str, state: ProcessRoleState) {
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
            if matches!(
                state,
                ProcessRoleState::Starting | ProcessRoleState::Running
            ) {
                *state = ProcessRoleState::Stopping;
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, ProcessRoleState> {
        match self.states.read() {
            Ok(states) => states.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

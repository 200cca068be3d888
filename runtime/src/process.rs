//! The process roles this process runs and the state of each, as `/readyz` reports them.
//! The composition root (`src/lib.rs`) registers the roles and updates their state; a
//! process role (what a process does: `api`, `relay`, …) is not an API key's role (who may
//! call what).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

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
    /// Ended without being asked to (a panic, or it gave up); restarted after a backoff.
    Failed,
}

/// How long a role may stay down (failing, and not yet running stably again) before the
/// process reports itself unhealthy.
pub const DEFAULT_DOWN_LIMIT: Duration = Duration::from_secs(60);

/// The roles of this process, each by name (`api`, `projector.orders`, `relay`,
/// `worker.analytics`, …), shared between the role tasks, `/readyz` and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct ProcessRoles {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    states: BTreeMap<String, ProcessRoleState>,
    /// Since when each failing role has been down: from its first failure until it has run
    /// stably again ([`ProcessRoles::recovered`]) or was stopped.
    down_since: BTreeMap<String, Instant>,
    /// `None`: [`DEFAULT_DOWN_LIMIT`].
    down_limit: Option<Duration>,
}

impl ProcessRoles {
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        match self.inner.write() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        match self.inner.read() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn set(&self, role: &str, state: ProcessRoleState) {
        let mut inner = self.write();
        match state {
            ProcessRoleState::Failed => {
                inner
                    .down_since
                    .entry(role.to_owned())
                    .or_insert_with(Instant::now);
            }
            ProcessRoleState::Stopped => {
                inner.down_since.remove(role);
            }
            _ => {}
        }
        inner.states.insert(role.to_owned(), state);
    }

    /// The role has run stably since its last restart: it no longer counts as down.
    pub fn recovered(&self, role: &str) {
        self.write().down_since.remove(role);
    }

    /// How long a role may stay down before [`ProcessRoles::down`] names it (tests shorten
    /// it; [`DEFAULT_DOWN_LIMIT`] otherwise).
    pub fn set_down_limit(&self, limit: Duration) {
        self.write().down_limit = Some(limit);
    }

    /// The roles that have stayed down longer than the limit: the process is unhealthy.
    pub fn down(&self) -> Vec<String> {
        let inner = self.read();
        let limit = inner.down_limit.unwrap_or(DEFAULT_DOWN_LIMIT);
        inner
            .down_since
            .iter()
            .filter(|(_, since)| since.elapsed() >= limit)
            .map(|(role, _)| role.clone())
            .collect()
    }

    /// Move every role that is not already down to `Stopping`.
    pub fn stopping(&self) {
        for state in self.write().states.values_mut() {
            if matches!(
                state,
                ProcessRoleState::Starting | ProcessRoleState::Running
            ) {
                *state = ProcessRoleState::Stopping;
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, ProcessRoleState> {
        self.read().states.clone()
    }
}

//! The process roles this process runs and the state of each, as `/readyz` reports them.
//! The composition root (`src/lib.rs`) registers the roles and updates their state; a
//! process role (what a process does: `api`, `relay`, …) is not an API key's role (who may
//! call what). [`every`] runs a role's periodic side tasks beside its loop.

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

/// How many times its own duration a periodic side task waits between runs at least: it
/// takes a twentieth of a core at most, whatever it reads. A gauge that counts a backlog
/// (mail waiting for an SMTP server that does not answer: it grows with the outage) then
/// reports less often instead of taking ever more of the cores the commands use.
pub const SIDE_TASK_SPACING: u32 = 20;

/// Run `task` now and then every `period` until `shutdown` turns true (or its sender is
/// gone): the side task of a loop (a table's statistics, its gauges) that waits on the
/// database and must not hold the loop meanwhile. Runs never overlap, and a run that took
/// longer than a [`SIDE_TASK_SPACING`]th of the period delays the next to that many times
/// its duration after its start. A run in flight at shutdown finishes, so its connection
/// goes back to the pool between statements, not during one.
pub async fn every<F, Fut>(
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut task: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
        let started = tokio::time::Instant::now();
        task().await;
        let next = started + period.max(started.elapsed() * SIDE_TASK_SPACING);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::{mpsc, watch};

    use super::*;

    /// How long a test waits for what must happen before it fails.
    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn every_runs_its_task_again_and_again_one_run_at_a_time_until_shutdown() {
        let (stop, shutdown) = watch::channel(false);
        let (ran, mut runs) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicUsize::new(0));
        let overlapped = Arc::new(AtomicUsize::new(0));
        let task = {
            let (running, overlapped) = (running.clone(), overlapped.clone());
            tokio::spawn(every(Duration::from_millis(1), shutdown, move || {
                let (running, overlapped, ran) = (running.clone(), overlapped.clone(), ran.clone());
                async move {
                    if running.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlapped.fetch_add(1, Ordering::SeqCst);
                    }
                    // Each run outlasts the period several times over.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    let _ = ran.send(());
                }
            }))
        };
        for run in 1..=5 {
            tokio::time::timeout(BOUND, runs.recv())
                .await
                .unwrap_or_else(|_| panic!("run {run} never came"));
        }
        stop.send(true).unwrap();
        tokio::time::timeout(BOUND, task)
            .await
            .expect("every went on after shutdown")
            .unwrap();
        assert_eq!(overlapped.load(Ordering::SeqCst), 0, "runs overlapped");
        assert_eq!(running.load(Ordering::SeqCst), 0, "a run was cut short");
    }

    #[tokio::test(start_paused = true)]
    async fn every_waits_twenty_times_a_long_run_and_the_period_after_a_short_one() {
        let (_stop, shutdown) = watch::channel(false);
        let (started, mut starts) = mpsc::unbounded_channel();
        let run = Arc::new(AtomicUsize::new(0));
        tokio::spawn(every(Duration::from_millis(100), shutdown, move || {
            let (run, started) = (run.clone(), started.clone());
            async move {
                let _ = started.send(tokio::time::Instant::now());
                // Runs of 50 ms (a backlog to count), then of 1 ms.
                let n = run.fetch_add(1, Ordering::SeqCst);
                let took = if n < 2 { 50 } else { 1 };
                tokio::time::sleep(Duration::from_millis(took)).await;
            }
        }));
        let mut at = Vec::new();
        for _ in 0..4 {
            at.push(starts.recv().await.expect("every stopped running its task"));
        }
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            gaps,
            [
                Duration::from_millis(1000),
                Duration::from_millis(1000),
                Duration::from_millis(100)
            ]
        );
    }

    #[tokio::test]
    async fn every_ends_when_the_shutdown_sender_is_gone() {
        let (stop, shutdown) = watch::channel(false);
        drop(stop);
        tokio::time::timeout(
            BOUND,
            every(Duration::from_secs(3600), shutdown, || async {}),
        )
        .await
        .expect("every outlived its shutdown sender");
    }
}

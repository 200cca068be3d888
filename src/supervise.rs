//! Role tasks under supervision: a role that panics or ends on its own is restarted with
//! backoff, and one that keeps failing is reported as down, so that `/healthz` fails and an
//! orchestrator restarts the whole process.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use ordo_runtime::process::{ProcessRoleState, ProcessRoles};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// The first restart's delay; each further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A role that has run this long since its last start counts as recovered: its backoff
/// starts over and it is no longer reported down.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The delay before restart number `failures` (1 for the first).
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

/// Run the role `start` makes until shutdown (`stopped` turns true), starting it again after
/// each panic or unasked-for end. `started` is the state recorded at each start: `Running`
/// for a role that is up as soon as it runs, `Starting` for one that reports `Running`
/// itself once connected. Returns the supervisor to await and its abort handle, which
/// stops the role too (it runs inside the supervisor's task).
pub fn supervise<F, Fut>(
    roles: &ProcessRoles,
    name: String,
    stopped: &watch::Receiver<bool>,
    started: ProcessRoleState,
    mut start: F,
) -> (JoinHandle<()>, AbortHandle)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (roles, mut stopped) = (roles.clone(), stopped.clone());
    let supervisor = tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            roles.set(&name, started);
            let run = AssertUnwindSafe(start()).catch_unwind();
            tokio::pin!(run);
            let outcome = tokio::select! {
                outcome = &mut run => outcome,
                () = tokio::time::sleep(STABLE_AFTER) => {
                    failures = 0;
                    roles.recovered(&name);
                    run.await
                }
            };
            if *stopped.borrow() {
                roles.set(&name, ProcessRoleState::Stopped);
                return;
            }
            match outcome {
                Ok(()) => tracing::error!(role = %name, "role ended without being asked to"),
                Err(_) => tracing::error!(role = %name, "role panicked"),
            }
            roles.set(&name, ProcessRoleState::Failed);
            failures = failures.saturating_add(1);
            let delay = backoff(failures);
            tracing::warn!(role = %name, failures, ?delay, "restarting the role");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stopped.wait_for(|stop| *stop) => {
                    roles.set(&name, ProcessRoleState::Stopped);
                    return;
                }
            }
        }
    });
    let abort = supervisor.abort_handle();
    (supervisor, abort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}

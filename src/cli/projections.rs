//! `ordo projections status | rebuild NAME | check`.

use std::time::Duration;

use anyhow::{bail, Context};
use ordo_projections::status::{self, ProjectionStatus};
use ordo_projections::{check, Projection, Rebuilder, RunnerConfig};
use tokio::sync::watch;

use super::progress::Progress;
use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Position, lag, errors and rebuild progress of each projection.
    Status {
        #[command(flatten)]
        config: Config,
    },
    /// Rebuild a projection from position zero into shadow tables and swap it in once it
    /// has caught up; the live one keeps serving meanwhile. Runs the rebuild here if no
    /// `ordo serve` is running the projection.
    Rebuild {
        #[command(flatten)]
        config: Config,
        /// orders, payments or customers.
        name: String,
    },
    /// Fold the whole log and compare it with the read models; exits non-zero on a
    /// difference.
    Check {
        #[command(flatten)]
        config: Config,
    },
}

#[allow(clippy::print_stdout)] // status lines are this command's output
fn print_status(items: &[ProjectionStatus]) {
    println!(
        "{:<10} {:<10} {:>10} {:>10} {:>9}  rebuild / error",
        "name", "state", "position", "lag", "lag (s)"
    );
    for s in items {
        let extra = match (&s.rebuild, &s.last_error) {
            (Some(r), _) => format!(
                "{} {}/{} at {:.0}/s",
                r.state, r.done, r.total, r.events_per_second
            ),
            (None, Some(e)) => format!("error at {}: {e}", s.error_position.unwrap_or_default()),
            (None, None) => String::new(),
        };
        println!(
            "{:<10} {:<10} {:>10} {:>10} {:>9.1}  {extra}",
            s.name, s.state, s.position, s.lag_events, s.lag_seconds
        );
    }
}

pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status { config } => {
            let pool = crate::migrate(&config).await?;
            print_status(&status::all(&pool).await?);
            Ok(())
        }
        ProjectionsCommand::Check { config } => {
            let pool = crate::migrate(&config).await?;
            // Before any `ordo serve` has run, the read models' tables are not there yet:
            // empty tables are what the check should compare the log with.
            for projection in Projection::ALL {
                ordo_projections::runner::prepare(&pool, projection).await?;
            }
            let mut progress = Progress::new("checking the read models against the log");
            let mismatches = check::check_with_progress(&pool, |p| {
                progress.show(p.read, p.total, None);
            })
            .await?;
            progress.finish("folded the log");
            #[allow(clippy::print_stdout)]
            for m in &mismatches {
                println!(
                    "{} {} {}: expected {} found {}",
                    m.table, m.id, m.field, m.expected, m.actual
                );
            }
            if mismatches.is_empty() {
                tracing::info!("read models equal the fold of the log");
                Ok(())
            } else {
                bail!(
                    "{} differences between the log and the read models",
                    mismatches.len()
                )
            }
        }
        ProjectionsCommand::Rebuild { config, name } => {
            let projection = Projection::from_name(&name).with_context(|| {
                format!("no projection is called `{name}` (orders, payments, customers)")
            })?;
            let pool = crate::migrate(&config).await?;
            ordo_projections::runner::prepare(&pool, projection).await?;
            if !status::request_rebuild(&pool, projection).await? {
                tracing::info!("a rebuild is already under way; following it");
            }
            // If no process builds it, build it here until the swap (another process that
            // holds the rebuild goes on with it; this one follows).
            let (stop, stopped) = watch::channel(false);
            let runner =
                tokio::spawn(Rebuilder::new(pool.clone(), RunnerConfig::default()).run(stopped));
            let result = follow(&pool, projection).await;
            let _ = stop.send(true);
            let _ = runner.await;
            result
        }
    }
}

/// Show progress until the rebuild has been swapped in.
async fn follow(pool: &sqlx::PgPool, projection: Projection) -> anyhow::Result<()> {
    let mut progress = Progress::new(format!("rebuilding {}", projection.name()));
    loop {
        let s = status::one(pool, projection).await?;
        match &s.rebuild {
            Some(r) => {
                progress.show(r.done, r.total, Some((r.events_per_second, r.eta_seconds)));
                if let Some(e) = &s.last_error {
                    tracing::warn!(error = %e, "rebuild is retrying after an error");
                }
            }
            None => {
                progress.finish(&format!("rebuilt {}", projection.name()));
                tracing::info!(
                    projection = projection.name(),
                    position = s.position,
                    "rebuild swapped in"
                );
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! `ordo projections status | rebuild NAME | check`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ordo_projections::status::{self, ProjectionStatus};
use ordo_projections::{check, Projection, Rebuilder, RunnerConfig};
use tokio::sync::watch;

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

/// Progress on the terminal: a bar with events/s and ETA; when stderr is not a terminal,
/// a log line every 2 s instead.
struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    completed: bool,
}

impl Progress {
    fn new(label: impl Into<String>) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.clone());
            bar
        });
        Self {
            label,
            bar,
            last_line: None,
            completed: false,
        }
    }

    /// `done` of `total` events; `rate` in events/s when the work reports its own (else the
    /// bar measures it; log lines then leave it out).
    fn show(&mut self, done: i64, total: i64, rate: Option<(f64, Option<f64>)>) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
            return;
        }
        // Every 2 s, and once more when all is done.
        let complete = total > 0 && done >= total;
        if complete && self.completed {
            return;
        }
        self.completed = complete;
        if !complete
            && self
                .last_line
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let percent = if total > 0 {
            (done as f64 * 100.0 / total as f64).min(100.0)
        } else {
            0.0
        };
        tracing::info!(
            task = %self.label,
            done,
            total,
            percent = percent.round(),
            events_per_second = rate.map(|(eps, _)| eps.round()),
            eta_seconds = rate.and_then(|(_, eta)| eta).map(f64::round),
            "progress"
        );
    }

    fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_owned());
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

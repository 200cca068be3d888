//! `ordo workers status | replay NAME --from-position N | --from-time T [--reprocess] |
//! rebuild analytics`.

use anyhow::bail;
use chrono::{DateTime, Utc};
use ordo_workers::analytics;
use ordo_workers::ops::{ReplayFrom, WorkersAdmin};
use ordo_workers::Worker;
use tokio::sync::watch;

use super::progress::Progress;
use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum WorkersCommand {
    /// Pending, in flight, redelivered and dead-lettered messages per worker.
    Status {
        #[command(flatten)]
        config: Config,
    },
    /// Deliver a worker's messages again from an event position or a time. Handlers skip
    /// what they already did, so effects are not repeated unless `--reprocess`.
    Replay {
        #[command(flatten)]
        config: Config,
        /// notification, analytics or integration.
        name: String,
        #[arg(long, conflicts_with = "from_time")]
        from_position: Option<i64>,
        /// RFC 3339, e.g. 2026-11-21T00:00:00Z.
        #[arg(long)]
        from_time: Option<DateTime<Utc>>,
        /// Repeat the side effects from there: e-mails and webhooks go out again
        /// (notification and integration only; analytics would count twice).
        #[arg(long)]
        reprocess: bool,
    },
    /// Recompute a worker's tables from the whole event log on the bulk path, into shadow
    /// tables swapped in at the end; the live tables serve meanwhile and the live consumer
    /// counts, after the swap, only the events the recompute did not. Only analytics, a
    /// pure function of events. An interrupted recompute resumes where it stopped.
    Rebuild {
        #[command(flatten)]
        config: Config,
        /// analytics.
        name: String,
        /// Events per read of the log.
        #[arg(long, default_value_t = 20_000)]
        batch_size: i64,
    },
}

fn admin(config: &Config) -> WorkersAdmin {
    WorkersAdmin::new(config.workers())
}

#[allow(clippy::print_stdout)] // the table is this command's output
pub async fn run(command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::Status { config } => {
            let pool = crate::migrate(&config).await?;
            let items = admin(&config).status(&pool).await?;
            println!(
                "{:<14} {:>9} {:>9} {:>11} {:>12}  last error",
                "worker", "pending", "in flight", "redelivered", "dead letters"
            );
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for s in items {
                println!(
                    "{:<14} {:>9} {:>9} {:>11} {:>12}  {}",
                    s.name,
                    show(s.pending.map(|v| v.to_string())),
                    show(s.in_flight.map(|v| v.to_string())),
                    show(s.redelivered.map(|v| v.to_string())),
                    s.dead_letters,
                    s.last_error.unwrap_or_default()
                );
            }
            Ok(())
        }
        WorkersCommand::Replay {
            config,
            name,
            from_position,
            from_time,
            reprocess,
        } => {
            let from = match (from_position, from_time) {
                (Some(p), None) => ReplayFrom::Position(p),
                (None, Some(t)) => ReplayFrom::Time(t),
                _ => bail!("give --from-position N or --from-time T"),
            };
            let pool = crate::migrate(&config).await?;
            let (start, forgotten) = admin(&config).replay(&pool, &name, from, reprocess).await?;
            if reprocess {
                println!("{name} replays messages published since {start}, repeating the effects of {forgotten} events");
            } else {
                println!("{name} replays messages published since {start}");
            }
            Ok(())
        }
        WorkersCommand::Rebuild {
            config,
            name,
            batch_size,
        } => {
            match Worker::from_name(&name) {
                Some(Worker::Analytics) => {}
                Some(_) => bail!("{name} has side effects (e-mails, webhooks): only analytics, a pure function of events, is recomputed from the log"),
                None => bail!("no worker is called `{name}` (analytics)"),
            }
            let pool = crate::migrate(&config).await?;
            let (stop, stopped) = watch::channel(false);
            // Ctrl-C stops before the swap: the live tables stay, the next run resumes.
            let interrupt = tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    let _ = stop.send(true);
                }
            });
            let mut progress = Progress::new("recomputing analytics");
            let rebuilt = analytics::rebuild(&pool, batch_size, &stopped, |p| {
                let left = (p.total - p.done).max(0) as f64;
                let eta = (p.events_per_second > 0.0).then(|| left / p.events_per_second);
                progress.show(p.done, p.total, Some((p.events_per_second, eta)));
            })
            .await;
            interrupt.abort();
            let rebuilt = rebuilt?;
            progress.finish("recomputed analytics");
            println!(
                "analytics recomputed from the log (from position {}): {} events read, the live tables count through position {}; {} events not counted (the worker cannot read them)",
                rebuilt.resumed_from, rebuilt.events, rebuilt.counted_through, rebuilt.skipped
            );
            Ok(())
        }
    }
}

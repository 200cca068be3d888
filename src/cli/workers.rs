//! `ordo workers status | replay NAME --from-position N | --from-time T [--reprocess]`.

use anyhow::bail;
use chrono::{DateTime, Utc};
use ordo_workers::ops::{ReplayFrom, WorkersAdmin};

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
    }
}

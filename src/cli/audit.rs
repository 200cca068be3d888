//! `ordo audit verify [--from POSITION]`: walk the hash chain and name the first broken link.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_commands::audit::{self, Verification};

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Re-compute every event's hash from the one before it and report broken links; exits
    /// non-zero when the chain is broken.
    Verify {
        #[command(flatten)]
        config: Config,
        /// The first position to check (its link to the event before it included).
        #[arg(long, default_value_t = 1)]
        from: i64,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { config, from } => {
            let pool = crate::migrate(&config).await?;
            let started = Instant::now();
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "verifying [{bar:40}] position {pos}/{len} ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            });
            let mut last_line = Instant::now();
            let report = audit::verify(&pool, from.max(1), |p| {
                if let Some(bar) = &bar {
                    bar.set_length(p.head.max(0) as u64);
                    bar.set_position(p.position.max(0) as u64);
                } else if last_line.elapsed() >= Duration::from_secs(2) {
                    tracing::info!(
                        position = p.position,
                        head = p.head,
                        checked = p.checked,
                        "verify progress"
                    );
                    last_line = Instant::now();
                }
            })
            .await?;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            print_report(&report, started.elapsed());
            if report.intact() {
                Ok(())
            } else {
                bail!(
                    "the chain is broken: {} broken link(s), the first at position {}",
                    report.broken_count,
                    report.broken.first().map_or(0, |b| b.position)
                )
            }
        }
    }
}

#[allow(clippy::print_stdout)] // the report is this command's output
fn print_report(report: &Verification, took: Duration) {
    let rate = report.checked as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "checked {} events, positions {}..={} in {:.1}s ({rate:.0} events/s)",
        report.checked,
        report.from,
        report.head,
        took.as_secs_f64()
    );
    if report.unchained > 0 {
        println!(
            "{} events at or below position {} predate the chain and carry no hash",
            report.unchained, report.genesis
        );
    }
    if let Some(hash) = &report.head_hash {
        println!("head hash {}", hex_encode(hash));
    }
    for broken in &report.broken {
        println!("BROKEN {broken}");
    }
    if report.broken_count > report.broken.len() as u64 {
        println!(
            "... and {} more broken links",
            report.broken_count - report.broken.len() as u64
        );
    }
    if report.intact() {
        println!("chain intact");
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

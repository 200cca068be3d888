//! `ordo audit verify [--from POSITION] [--witness FILE]`: walk the hash chain, check the
//! signed checkpoints (and those a witness file holds) and name the first broken link;
//! `ordo audit checkpoint`: sign the log's head now and print its witness line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_commands::audit::{self, Verification};
use ordo_commands::checkpoint::{self, Signed};
use ordo_commands::witness;

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Re-compute every event's hash from the one before it, check every signed checkpoint
    /// against the trusted public keys (`--public-key`, comma-separated, each base64 or
    /// `name=base64`; else the signing key's), report broken links and which key signed
    /// which checkpoints; exits non-zero when the chain or a checkpoint is broken.
    Verify {
        #[command(flatten)]
        config: Config,
        /// The first position to check (its link to the event before it included).
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// A witness file (`ORDO_AUDIT_WITNESS_FILE`'s lines, or `ordo audit checkpoint`'s
        /// output kept elsewhere): every checkpoint in it is checked against the chain too,
        /// and one missing from the database is a finding. Without a trusted public key, the
        /// keys it names are trusted.
        #[arg(long)]
        witness: Option<PathBuf>,
    },
    /// Sign the log's last event now with `ORDO_AUDIT_SIGNING_KEY` (nothing new when it is
    /// signed already), append it to `ORDO_AUDIT_WITNESS_FILE` if set, and print its witness
    /// line last on stdout in any case, for operators to keep outside the database.
    Checkpoint {
        #[command(flatten)]
        config: Config,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Checkpoint { config } => {
            let keys = config.audit_keys()?;
            let Some(signer) = keys.signer else {
                bail!("set ORDO_AUDIT_SIGNING_KEY (or ORDO_AUDIT_SIGNING_KEY_FILE) to sign");
            };
            let pool = crate::migrate(&config).await?;
            print_signed(&checkpoint::sign(&pool, &signer).await?);
            Ok(())
        }
        AuditCommand::Verify {
            config,
            from,
            witness,
        } => {
            let trusted = config.audit_keys()?.trusted;
            let witness = witness.as_deref().map(witness::read).transpose()?;
            if trusted.is_empty() && witness.is_none() {
                tracing::warn!(
                    "no ORDO_AUDIT_PUBLIC_KEY or signing key: signed checkpoints are not checked"
                );
            }
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
            let report =
                audit::verify_witnessed(&pool, from.max(1), &trusted, witness.as_deref(), |p| {
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
                let faults = report.signatures.as_ref().map_or(0, |s| s.faults.len());
                bail!(
                    "the log is broken: {} broken link(s){}, {faults} contradicted checkpoint(s)",
                    report.broken_count,
                    report.broken.first().map_or(String::new(), |b| format!(
                        ", the first at position {}",
                        b.position
                    )),
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
        match &broken.signed_by {
            Some(c) => println!("BROKEN {broken}; it contradicts {c}"),
            None => println!("BROKEN {broken}"),
        }
    }
    if report.broken_count > report.broken.len() as u64 {
        println!(
            "... and {} more broken links",
            report.broken_count - report.broken.len() as u64
        );
    }
    if let Some(signatures) = &report.signatures {
        println!(
            "{} signed checkpoint(s) checked against {} trusted key(s)",
            signatures.checked,
            signatures.keys.len()
        );
        if let Some(witnessed) = signatures.witnessed {
            println!("{witnessed} witnessed checkpoint(s) checked against the database");
        }
        for key in &signatures.keys {
            println!("signed by {key}");
        }
        for fault in &signatures.faults {
            println!("CHECKPOINT {fault}");
        }
    }
    println!("{}", report.coverage());
    if report.intact() {
        println!("chain intact");
    }
}

#[allow(clippy::print_stdout)] // the checkpoint is this command's output
fn print_signed(signed: &Signed) {
    let (what, c) = match signed {
        Signed::New(c) => ("signed", c),
        Signed::Unchanged(c) => ("already signed", c),
        Signed::Empty => {
            println!("nothing to sign: the log has no chained event yet");
            return;
        }
    };
    println!(
        "{what}: checkpoint #{} position {} hash {} at {}",
        c.id,
        c.position,
        hex_encode(&c.hash),
        c.signed_at.to_rfc3339()
    );
    println!("{}", witness::line(c));
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

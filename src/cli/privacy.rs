//! `ordo customers erase ID` and `ordo privacy migrate|rewrap` (ADR 0020).

use anyhow::Context;
use ordo_commands::privacy::Keyring;
use ordo_commands::{Actor, CommandMetadata, Commands};
use uuid::Uuid;

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum CustomersCommand {
    /// Erase a customer's personal data: destroy their data key and record
    /// `customer.erased`. Cannot be undone; erasing again changes nothing.
    Erase {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PrivacyCommand {
    /// Bring data written before encryption under it: give a data key to every registered
    /// customer without one, index the e-mail of every customer not yet indexed under the
    /// current master key (the blind index lookups use), seal every read-model and
    /// notification row still holding personal data in clear with its customer's key
    /// (dropping an erased customer's), and report the events stored with clear personal
    /// fields (their rows cannot change without breaking the hash chain; reads mask them
    /// once the customer is erased). Running it again seals nothing new.
    Migrate {
        #[command(flatten)]
        config: Config,
    },
    /// Re-wrap every data key wrapped by an older master key (ORDO_PREVIOUS_MASTER_KEYS)
    /// with the current one and recompute the e-mail blind index under the current one, so
    /// the older key can be retired.
    Rewrap {
        #[command(flatten)]
        config: Config,
    },
}

async fn keyring(config: &Config) -> anyhow::Result<(sqlx::PgPool, Keyring)> {
    let pool = crate::migrate(config).await?;
    let keys = Keyring::new(pool.clone(), config.master_keys()?);
    Ok((pool, keys))
}

pub async fn customers(command: CustomersCommand) -> anyhow::Result<()> {
    match command {
        CustomersCommand::Erase { config, id } => {
            let (pool, keys) = keyring(&config).await?;
            let commands = Commands::with_keys(pool.clone(), keys);
            let meta = CommandMetadata {
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                actor: Actor {
                    key_id: None,
                    name: "ordo customers erase".into(),
                    role: "admin".into(),
                },
                request_id: Uuid::now_v7().to_string(),
                idempotency_key: None,
                idempotent: None,
                traceparent: None,
                channel: None,
            };
            let committed = commands
                .erase_customer(id, chrono::Utc::now(), &meta)
                .await
                .with_context(|| format!("cannot erase customer {id}"))?;
            pool.close().await;
            tracing::info!(
                customer.id = %id,
                version = committed.version,
                position = committed.position,
                "customer erased"
            );
            Ok(())
        }
    }
}

pub async fn run(command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Migrate { config } => {
            let (pool, keys) = keyring(&config).await?;
            if !keys.encrypts() {
                tracing::warn!("no master key is configured (ORDO_MASTER_KEY): nothing is sealed");
            }
            let report = ordo_commands::privacy::migrate(&keys).await?;
            let customers = ordo_projections::sealing::seal_customers(&keys).await?;
            let notifications = ordo_workers::notification::sealing::seal_rows(&keys).await?;
            pool.close().await;
            let sealed = customers.sealed + notifications;
            tracing::info!(
                keys_created = report.keys_created,
                indexed = report.indexed,
                rows_sealed = sealed,
                clear_events = report.clear_events,
                clear_events_of_erased = report.clear_events_of_erased,
                "privacy migration done"
            );
            #[allow(clippy::print_stdout)] // the report is this command's output
            {
                println!(
                    "data keys created for customers registered before encryption: {}",
                    report.keys_created
                );
                println!("e-mail addresses indexed: {}", report.indexed);
                println!(
                    "read-model rows sealed: {sealed} (customers: {}, notifications and their recipients: {notifications}); erased customers' clear rows dropped: {}",
                    customers.sealed, customers.withheld
                );
                println!(
                    "events with personal fields in clear: {} (of erased customers: {}; masked on every read, their rows unchanged)",
                    report.clear_events, report.clear_events_of_erased
                );
            }
            Ok(())
        }
        PrivacyCommand::Rewrap { config } => {
            let (pool, keys) = keyring(&config).await?;
            if !keys.encrypts() {
                anyhow::bail!("no master key is configured (ORDO_MASTER_KEY)");
            }
            let done = keys.rewrap().await?;
            let indexed = ordo_commands::privacy::reindex_emails(&keys).await?;
            pool.close().await;
            tracing::info!(
                rewrapped = done,
                reindexed = indexed,
                "data keys re-wrapped, e-mail blind index under the current master key"
            );
            Ok(())
        }
    }
}

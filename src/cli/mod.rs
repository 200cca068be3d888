//! `ordo` subcommands; the README's "CLI" lists them.

mod audit;
mod channels;
mod privacy;
mod progress;
mod projections;
mod webhooks;
mod workers;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ordo_api::Role;

use ordo_runtime::telemetry;

use crate::{Application, Config};

/// The whole command line. Public so that tests can check deployment files (the
/// docker-compose commands and environment) against the real parser.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about = "Event-sourced order processing")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Ordo's roles in this process (`--roles api,projector`; all by default).
    Serve {
        #[command(flatten)]
        config: Config,
    },
    /// Run one worker alone (notification, analytics or integration): the same as
    /// `serve --roles workers --workers NAME`.
    Worker {
        name: String,
        #[command(flatten)]
        config: Config,
    },
    /// Create the database if needed and apply migrations, then exit.
    Migrate {
        #[command(flatten)]
        config: Config,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Read models: status, rebuild, consistency check.
    Projections {
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Workers on JetStream: status, replay; analytics recomputed from the log.
    Workers {
        #[command(subcommand)]
        command: workers::WorkersCommand,
    },
    /// The log's hash chain: verify.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Customers: erase one's personal data.
    Customers {
        #[command(subcommand)]
        command: privacy::CustomersCommand,
    },
    /// Personal data: migrate data written before encryption, re-wrap keys after a master
    /// key rotation.
    Privacy {
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// Sales channels: create, list, show, rename, e-mail sender.
    Channels {
        #[command(subcommand)]
        command: channels::ChannelsCommand,
    },
    /// Webhook endpoints: list, show, update, disable, enable, delete, rotate the secret,
    /// send a test, deliveries by status, retry one.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it, alone, on stdout. Only its hash is stored.
    Create {
        #[command(flatten)]
        config: Config,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        name: String,
        /// The channel the key is scoped to (it must exist). Storefront keys always belong
        /// to one (default: `default`); other roles' keys are global without it.
        #[arg(long)]
        channel: Option<String>,
    },
    /// Every key: id, role, channel, state (active or revoked), created, name. Never the key.
    List {
        #[command(flatten)]
        config: Config,
    },
    /// Revoke a key by its id (from `keys list`): every process refuses it within a second.
    Revoke {
        #[command(flatten)]
        config: Config,
        id: uuid::Uuid,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let code = match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ordo failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The batch exporter blocks while it sends: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
    code
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            tracing::info!(roles = ?config.roles, "starting");
            let app = Application::build(&config).await?;
            if let Ok(addr) = app.local_addr() {
                tracing::info!(addr = %addr, "listening");
            }
            app.run_until_stopped(crate::shutdown_signal()).await?;
            Ok(())
        }
        Command::Worker { name, mut config } => {
            config.roles = vec![crate::ProcessRole::Workers];
            config.worker_names = vec![name];
            let app = Application::build(&config).await?;
            app.run_until_stopped(crate::shutdown_signal()).await?;
            Ok(())
        }
        Command::Migrate { config } => {
            let pool = crate::migrate(&config).await?;
            pool.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    config,
                    role,
                    name,
                    channel,
                },
        } => {
            let pool = crate::migrate(&config).await?;
            if let Some(channel) = &channel {
                if !ordo_commands::channels::exists(&pool, channel).await? {
                    bail!("no channel has the id `{channel}` (see `ordo channels list`)");
                }
            }
            let key = ordo_api::auth::create_key_in(&pool, role, &name, channel.as_deref())
                .await
                .context("cannot store the key")?;
            pool.close().await;
            #[allow(clippy::print_stdout)] // the key is this command's output
            {
                println!("{key}");
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::List { config },
        } => {
            let pool = crate::migrate(&config).await?;
            let keys = ordo_api::keys::list(&pool)
                .await
                .context("cannot read the keys")?;
            pool.close().await;
            #[allow(clippy::print_stdout)] // the table is this command's output
            {
                println!(
                    "{:<36}  {:<10}  {:<16}  {:<7}  {:<20}  NAME",
                    "ID", "ROLE", "CHANNEL", "STATE", "CREATED"
                );
                for key in keys {
                    let state = if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<36}  {:<10}  {:<16}  {:<7}  {:<20}  {}",
                        key.id,
                        key.role,
                        key.channel.as_deref().unwrap_or("(global)"),
                        state,
                        key.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        key.name
                    );
                }
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Revoke { config, id },
        } => {
            let pool = crate::migrate(&config).await?;
            let revoked = ordo_api::keys::revoke(&pool, id)
                .await
                .context("cannot revoke the key")?;
            pool.close().await;
            match revoked {
                Some(key) => {
                    tracing::info!(key.id = %key.id, key.name = %key.name, "key revoked");
                    Ok(())
                }
                None => anyhow::bail!("no key has the id {id}"),
            }
        }
        Command::Projections { command } => projections::run(command).await,
        Command::Workers { command } => workers::run(command).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Customers { command } => privacy::customers(command).await,
        Command::Privacy { command } => privacy::run(command).await,
        Command::Webhooks { command } => webhooks::run(command).await,
        Command::Channels { command } => channels::run(command).await,
    }
}

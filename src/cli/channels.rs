//! `ordo channels create ID --name NAME | list | show ID | rename ID --name NAME |
//! sender ID [--address A] [--sender-name N]`: sales channels.

use anyhow::{bail, Context};
use ordo_commands::channels::{self, Channel, ChannelId, ChannelUpdate};

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ChannelsCommand {
    /// Create a channel: ID is a lowercase slug (a-z, 0-9, '-'; at most 63 characters).
    Create {
        #[command(flatten)]
        config: Config,
        #[arg(value_parser = parse_id)]
        id: ChannelId,
        #[arg(long)]
        name: String,
    },
    /// Every channel: id, name, e-mail sender.
    List {
        #[command(flatten)]
        config: Config,
    },
    /// One channel.
    Show {
        #[command(flatten)]
        config: Config,
        id: String,
    },
    /// Give a channel another name (its id never changes).
    Rename {
        #[command(flatten)]
        config: Config,
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Set the sender of a channel's e-mail; without options, fall back to the configured
    /// sender.
    Sender {
        #[command(flatten)]
        config: Config,
        id: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long = "sender-name")]
        sender_name: Option<String>,
    },
}

fn parse_id(raw: &str) -> Result<ChannelId, String> {
    ChannelId::parse(raw)
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let length = name.trim().chars().count();
    if length == 0 || length > channels::MAX_NAME_LEN {
        bail!(
            "the name must be 1 to {} characters",
            channels::MAX_NAME_LEN
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // the channel is this command's output
fn print(channel: &Channel) {
    let sender = match (&channel.email_from_name, &channel.email_from_address) {
        (_, None) => "(configured sender)".to_owned(),
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.clone(),
    };
    println!("{:<24}  {:<32}  {}", channel.id, channel.name, sender);
}

pub async fn run(command: ChannelsCommand) -> anyhow::Result<()> {
    match command {
        ChannelsCommand::Create { config, id, name } => {
            valid_name(&name)?;
            let pool = crate::migrate(&config).await?;
            let created = channels::create(&pool, &id, name.trim()).await?;
            pool.close().await;
            match created {
                Some(channel) => print(&channel),
                None => bail!("a channel with the id `{id}` exists already"),
            }
        }
        ChannelsCommand::List { config } => {
            let pool = crate::migrate(&config).await?;
            let list = channels::list(&pool)
                .await
                .context("cannot read the channels")?;
            pool.close().await;
            #[allow(clippy::print_stdout)] // the table is this command's output
            {
                println!("{:<24}  {:<32}  SENDER", "ID", "NAME");
            }
            list.iter().for_each(print);
        }
        ChannelsCommand::Show { config, id } => {
            let pool = crate::migrate(&config).await?;
            let channel = channels::get(&pool, &id).await?;
            pool.close().await;
            match channel {
                Some(channel) => print(&channel),
                None => bail!("no channel has the id `{id}`"),
            }
        }
        ChannelsCommand::Rename { config, id, name } => {
            valid_name(&name)?;
            let update = ChannelUpdate {
                name: Some(name.trim().to_owned()),
                ..ChannelUpdate::default()
            };
            update_one(&config, &id, &update).await?;
        }
        ChannelsCommand::Sender {
            config,
            id,
            address,
            sender_name,
        } => {
            if let Some(address) = &address {
                if !channels::valid_sender_address(address) {
                    bail!("`{address}` is not an e-mail address");
                }
            }
            let update = ChannelUpdate {
                name: None,
                email_from_address: Some(address),
                email_from_name: Some(sender_name),
            };
            update_one(&config, &id, &update).await?;
        }
    }
    Ok(())
}

async fn update_one(config: &Config, id: &str, update: &ChannelUpdate) -> anyhow::Result<()> {
    let pool = crate::migrate(config).await?;
    let updated = channels::update(&pool, id, update).await?;
    pool.close().await;
    match updated {
        Some(channel) => {
            print(&channel);
            Ok(())
        }
        None => bail!("no channel has the id `{id}`"),
    }
}

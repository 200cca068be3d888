//! `ordo webhooks list | show ID | update ID [--url U] [--event-types T,..] [--description D]
//! | disable ID | enable ID | delete ID | rotate-secret ID | test ID
//! | deliveries ID [--status S] | retry ID DELIVERY`: the endpoint lifecycle, as over the API.

use anyhow::{bail, Context};
use ordo_workers::integration::endpoints::{self, EndpointUpdate, EndpointView};
use ordo_workers::integration::{outbox, valid_event_type};
use uuid::Uuid;

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Every endpoint: state, queue, counts.
    List {
        #[command(flatten)]
        config: Config,
    },
    /// One endpoint, as JSON.
    Show {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    /// Change an endpoint's URL, event types or description.
    Update {
        #[command(flatten)]
        config: Config,
        id: Uuid,
        #[arg(long)]
        url: Option<String>,
        /// Patterns, comma separated: `order.placed,payment.*` or `*`.
        #[arg(long, value_delimiter = ',')]
        event_types: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
    },
    /// No new deliveries; waiting ones wait.
    Disable {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    /// Deliveries go on (also after an automatic disable).
    Enable {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    Delete {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    /// Print a new secret, alone, on stdout; both signatures are sent for 24 h.
    RotateSecret {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    /// Queue a `webhook.test` message for the endpoint.
    Test {
        #[command(flatten)]
        config: Config,
        id: Uuid,
    },
    /// The endpoint's deliveries, newest first.
    Deliveries {
        #[command(flatten)]
        config: Config,
        id: Uuid,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a delivery due now.
    Retry {
        #[command(flatten)]
        config: Config,
        id: Uuid,
        delivery: Uuid,
    },
}

fn found<T>(value: Option<T>, id: Uuid) -> anyhow::Result<T> {
    value.with_context(|| format!("no webhook endpoint (or delivery) has the id {id}"))
}

#[allow(clippy::print_stdout)] // what each command prints is its output
fn print_endpoint(endpoint: &EndpointView) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(endpoint)?);
    Ok(())
}

#[allow(clippy::print_stdout)] // what each command prints is its output
pub async fn run(command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::List { config } => {
            let pool = crate::migrate(&config).await?;
            println!(
                "{:<36} {:<8} {:>7} {:>9} {:>6}  url",
                "id", "state", "pending", "delivered", "failed"
            );
            for e in endpoints::list(&pool).await?.items {
                println!(
                    "{:<36} {:<8} {:>7} {:>9} {:>6}  {}",
                    e.id, e.state, e.pending, e.delivered, e.failed, e.url
                );
            }
        }
        WebhooksCommand::Show { config, id } => {
            let pool = crate::migrate(&config).await?;
            print_endpoint(&found(endpoints::show(&pool, id).await?, id)?)?;
        }
        WebhooksCommand::Update {
            config,
            id,
            url,
            event_types,
            description,
        } => {
            if let Some(bad) = event_types.iter().flatten().find(|t| !valid_event_type(t)) {
                bail!("`{bad}` is not an event type, a prefix (`payment.*`) or `*`");
            }
            if url
                .as_deref()
                .is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                bail!("the URL must be http:// or https://");
            }
            let pool = crate::migrate(&config).await?;
            let change = EndpointUpdate {
                url,
                event_types,
                description: description.map(Some),
                channel: None,
            };
            print_endpoint(&found(endpoints::update(&pool, id, &change).await?, id)?)?;
        }
        WebhooksCommand::Disable { config, id } => {
            let pool = crate::migrate(&config).await?;
            print_endpoint(&found(endpoints::set_enabled(&pool, id, false).await?, id)?)?;
        }
        WebhooksCommand::Enable { config, id } => {
            let pool = crate::migrate(&config).await?;
            print_endpoint(&found(endpoints::set_enabled(&pool, id, true).await?, id)?)?;
        }
        WebhooksCommand::Delete { config, id } => {
            let pool = crate::migrate(&config).await?;
            if !endpoints::delete(&pool, id).await? {
                bail!("no webhook endpoint has the id {id}");
            }
            println!("deleted {id}");
        }
        WebhooksCommand::RotateSecret { config, id } => {
            let pool = crate::migrate(&config).await?;
            println!("{}", found(endpoints::rotate_secret(&pool, id).await?, id)?);
        }
        WebhooksCommand::Test { config, id } => {
            let pool = crate::migrate(&config).await?;
            let queued = found(outbox::send_test(&pool, id).await?, id)?;
            println!("queued test delivery {}", queued.id);
        }
        WebhooksCommand::Deliveries {
            config,
            id,
            status,
            limit,
        } => {
            if status
                .as_deref()
                .is_some_and(|s| !outbox::STATUSES.contains(&s))
            {
                bail!("--status is pending, delivered or failed");
            }
            let pool = crate::migrate(&config).await?;
            let list = found(
                outbox::deliveries(&pool, id, status.as_deref(), limit).await?,
                id,
            )?;
            println!(
                "{:<36} {:<10} {:>8} {:>6}  {:<20} last error",
                "delivery", "status", "attempts", "code", "event type"
            );
            for d in list.items {
                println!(
                    "{:<36} {:<10} {:>8} {:>6}  {:<20} {}",
                    d.id,
                    d.status,
                    d.attempts,
                    d.last_status_code
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    d.event_type,
                    d.last_error.unwrap_or_default()
                );
            }
        }
        WebhooksCommand::Retry {
            config,
            id,
            delivery,
        } => {
            let pool = crate::migrate(&config).await?;
            found(outbox::retry_now(&pool, id, delivery).await?, delivery)?;
            println!("delivery {delivery} is due now");
        }
    }
    Ok(())
}

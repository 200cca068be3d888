//! The integration worker: webhooks to endpoints registered through the API, signed the
//! Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! # Deliveries are isolated (ADR 0009)
//!
//! The worker sends nothing. For each event it writes one delivery per active endpoint
//! subscribed to the event's type into the outbox (`integration.outbox`), in the
//! transaction that records the event as processed, and the message is acknowledged once
//! that commits. A JetStream redelivery writes nothing twice: the event is processed
//! already, and a delivery is unique per (endpoint, event).
//!
//! The delivery pool ([`pool::DeliveryPool`]) sends: each endpoint has its own queue,
//! ordered per aggregate, with bounded concurrency per endpoint and overall, and its own
//! retry schedule. No transaction is open while a request is: a delivery is claimed
//! (a lease, one statement), sent, then its outcome recorded. An endpoint that hangs or
//! fails delays only its own deliveries, and one failing for longer than
//! `DeliveryConfig::disable_after` is disabled (recorded, counted, shown in its status).
//!
//! - `signing.rs`: signatures, secrets, event-type patterns; `client.rs`: the HTTP client.
//! - `endpoints.rs`: the endpoint lifecycle (register, list, show, update, enable,
//!   disable, delete, rotate the secret).
//! - `outbox.rs`: writing, listing and retrying deliveries, test events.
//! - `pool.rs`: sending.

pub mod client;
pub mod endpoints;
pub mod outbox;
pub mod pool;
pub mod signing;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use crate::jetstream::{Delivered, HandleError, Policy};
use ordo_commands::privacy::{Keyring, Mode};

pub use client::{client_with, default_client, TIMEOUT};
pub use endpoints::register;
pub use pool::{DeliveryConfig, DeliveryPool};
pub use signing::{new_secret, sign, valid_event_type, InvalidSecret};

pub const NAME: &str = "integration";

/// The integration worker's policy: its only effect is outbox rows, so a batch of events
/// is written in one transaction.
///
/// Webhooks carry personal fields in clear to the registered endpoints (ADR 0020): the
/// worker opens them through the key store before it writes the outbox. An erased
/// customer's fields go out withheld (`{"sealed": ""}`), and `customer.erased` withholds
/// them in the outbox rows already written for that customer.
#[derive(Debug, Clone, Default)]
pub struct Integration {
    keys: Option<Keyring>,
}

impl Integration {
    /// Open sealed personal fields with these keys (without, they go out sealed).
    pub fn with_keys(keys: Keyring) -> Self {
        Self { keys: Some(keys) }
    }
}

impl From<Integration> for std::sync::Arc<dyn Policy> {
    fn from(policy: Integration) -> Self {
        std::sync::Arc::new(policy)
    }
}

#[async_trait]
impl Policy for Integration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn processed_table(&self) -> &'static str {
        "integration.processed"
    }

    async fn handle(
        &self,
        pool: &PgPool,
        tx: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError> {
        let keys = self
            .keys
            .clone()
            .unwrap_or_else(|| Keyring::new(pool.clone(), None));
        // Only the events some endpoint wants are opened and written.
        let endpoints = outbox::Endpoints::active(&mut *tx).await?;
        let wanted: Vec<&Delivered> = events
            .iter()
            .copied()
            .filter(|e| endpoints.want(e))
            .collect();
        if !wanted.is_empty() {
            let mut bodies = wanted
                .iter()
                .map(|e| e.value())
                .collect::<Result<Vec<_>, _>>()?;
            let mut payloads: Vec<(&str, &mut serde_json::Value)> = wanted
                .iter()
                .zip(bodies.iter_mut())
                .map(|(e, body)| (e.event_type.as_str(), body))
                .collect();
            keys.open_on(&mut *tx, &mut payloads, Mode::Fold).await?;
            let opened: Vec<(&Delivered, serde_json::Value)> =
                wanted.into_iter().zip(bodies).collect();
            endpoints.write(tx, &opened).await?;
        }
        for event in events {
            if event.event_type == ordo_domain::event::types::CUSTOMER_ERASED {
                let erased: ordo_domain::customer::CustomerErased = event.data()?;
                outbox::withhold(tx, erased.customer_id).await?;
            }
        }
        Ok(())
    }
}

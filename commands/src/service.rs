//! The commands the API offers, including the few that need to read another stream first
//! (an order's customer, a payment's order, the payments covering a shipment).

use chrono::{DateTime, Utc};
use ordo_domain::customer::{Customer, CustomerCommand, RegisterCustomer};
use ordo_domain::order::{Order, OrderCommand, PlaceOrder, ShipOrder, ShipmentLine};
use ordo_domain::payment::{CreatePayment, OrderFacts, Payment, PaymentCommand};
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency, DomainError};

use cqrs_es::Aggregate;
use sqlx::PgPool;
use uuid::Uuid;

use crate::appender::{PaymentCap, StreamVersion};
use crate::store::{Facts, Versioned};
use crate::{CommandError, CommandMetadata, Committed, EventStore};

pub struct Commands {
    store: EventStore,
}

/// At most this many payments per order: shipping and the process manager fold every payment
/// of an order, so an order's payments must stay few. A creation is decided against the count
/// it read, then counted again by the appender under the commit point (creations do not
/// change the order's stream), so concurrent ones cannot pass the limit together.
pub const MAX_PAYMENTS_PER_ORDER: i64 = 100;

/// A shipment as requested; the covered amount is found by [`Commands::ship_order`].
#[derive(Debug, Clone)]
pub struct ShipRequest {
    pub carrier: Text,
    pub tracking_number: Text,
    pub lines: Option<Vec<ShipmentLine>>,
    pub at: DateTime<Utc>,
}

/// A payment as requested; its order's facts are looked up by [`Commands::create_payment`].
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub amount: Amount,
    pub currency: Currency,
    pub method: Text,
    pub at: DateTime<Utc>,
}

impl Commands {
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: EventStore::new(pool),
        }
    }

    /// Commands that seal personal data with `keys` (ADR 0020).
    pub fn with_keys(pool: PgPool, keys: crate::privacy::Keyring) -> Self {
        Self {
            store: EventStore::with_keys(pool, keys),
        }
    }

    pub fn keys(&self) -> &crate::privacy::Keyring {
        self.store.keys()
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    pub async fn register_customer(
        &self,
        cmd: RegisterCustomer,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let id = cmd.customer_id.to_string();
        self.store
            .execute::<Customer>(&id, None, CustomerCommand::Register(cmd), meta)
            .await
    }

    pub async fn customer(
        &self,
        customer_id: Uuid,
        expected: Option<u64>,
        cmd: CustomerCommand,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.store
            .execute::<Customer>(&customer_id.to_string(), expected, cmd, meta)
            .await
    }

    /// Erase a customer's personal data: destroy their data key, then record
    /// `customer.erased`. Erasing an erased customer answers with the erasure already
    /// recorded. The key goes first: if the append fails, the customer is already masked on
    /// every read, and erasing again records the event.
    pub async fn erase_customer(
        &self,
        customer_id: Uuid,
        at: DateTime<Utc>,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let id = customer_id.to_string();
        let not_found = || {
            CommandError::from(DomainError::NotFound {
                aggregate: "customer",
            })
        };
        // A key confined to a channel erases only that channel's customers (and learns
        // nothing of the others'), checked before anything is destroyed.
        let channel = self.store.stream_channel(Customer::TYPE, &id).await?;
        match (&channel, &meta.channel) {
            (None, _) => return Err(not_found()),
            (Some(stream), Some(scope)) if stream != scope => return Err(not_found()),
            _ => {}
        }
        self.store.keys().erase(customer_id).await?;
        let erased = self
            .store
            .execute::<Customer>(&id, None, CustomerCommand::Erase { at }, meta)
            .await;
        match erased {
            Err(CommandError::Domain(DomainError::Refused {
                rule: "customer-erased",
                ..
            })) => self.erasure_of(&id).await,
            other => other,
        }
    }

    /// The `customer.erased` event already recorded for a customer, as a command's result.
    async fn erasure_of(&self, id: &str) -> Result<Committed, CommandError> {
        let (version, position): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT max(sequence) FROM event_store.events
                      WHERE aggregate_type = 'customer' AND aggregate_id = $1),
                    global_position
               FROM event_store.events
              WHERE aggregate_type = 'customer' AND aggregate_id = $1
                AND event_type = 'customer.erased'
              ORDER BY sequence LIMIT 1",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok(Committed {
            id: id.to_owned(),
            version: version as u64,
            position,
        })
    }

    /// Place an order for a registered customer of the order's channel.
    pub async fn place_order(
        &self,
        cmd: PlaceOrder,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let customer = self
            .store
            .stream_channel(Customer::TYPE, &cmd.customer_id.to_string())
            .await?;
        let Some(customer_channel) = customer else {
            return Err(DomainError::invalid("customer_id", "no customer has this id").into());
        };
        same_channel(meta, &customer_channel, "the customer")?;
        let id = cmd.order_id.to_string();
        self.store
            .execute::<Order>(&id, None, OrderCommand::Place(cmd), meta)
            .await
    }

    /// Confirm, cancel or deliver an order.
    pub async fn order(
        &self,
        order_id: Uuid,
        expected: Option<u64>,
        cmd: OrderCommand,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.store
            .execute::<Order>(&order_id.to_string(), expected, cmd, meta)
            .await
    }

    /// Ship (part of) an order, if its payments cover its total. The appender checks that
    /// none of the payments read moved before the shipment commits (a void committed
    /// meanwhile makes it decide again), so coverage is never judged on stale payments.
    pub async fn ship_order(
        &self,
        order_id: Uuid,
        expected: Option<u64>,
        request: ShipRequest,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let request = &request;
        self.store
            .execute_with::<Order, _, _>(
                &order_id.to_string(),
                expected,
                false,
                meta,
                || async move {
                    let payments = self.payments_of_order(order_id).await?;
                    // Payments may together cover more than the largest amount; any total
                    // is at most that, so such coverage covers every order.
                    let covered =
                        Amount::checked_sum(payments.iter().map(|(_, p)| p.state.coverage()))
                            .unwrap_or(Amount::MAX);
                    let reads: Vec<StreamVersion> = payments
                        .iter()
                        .map(|(id, p)| StreamVersion {
                            aggregate_type: Payment::TYPE.to_owned(),
                            aggregate_id: id.clone(),
                            version: p.version,
                        })
                        .collect();
                    let cmd = OrderCommand::Ship(ShipOrder {
                        carrier: request.carrier.clone(),
                        tracking_number: request.tracking_number.clone(),
                        lines: request.lines.clone(),
                        covered,
                        at: request.at,
                    });
                    Ok((cmd, reads.into()))
                },
            )
            .await
    }

    /// Create a pending payment for an existing order, in the order's currency.
    pub async fn create_payment(
        &self,
        request: NewPayment,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let request = &request;
        let order_id = request.order_id.to_string();
        let order_id = &order_id;
        self.store
            .execute_with::<Payment, _, _>(
                &request.payment_id.to_string(),
                None,
                true,
                meta,
                || async move {
                    let payments = self.payment_count_of_order(request.order_id).await?;
                    if payments >= MAX_PAYMENTS_PER_ORDER {
                        return Err(DomainError::refused(
                            "too-many-payments",
                            format!("an order takes at most {MAX_PAYMENTS_PER_ORDER} payments"),
                        )
                        .into());
                    }
                    let order = self.store.load::<Order>(order_id).await?;
                    if let Some(order_channel) =
                        self.store.stream_channel(Order::TYPE, order_id).await?
                    {
                        same_channel(meta, &order_channel, "the order")?;
                    }
                    let facts = OrderFacts {
                        order_id: request.order_id,
                        customer_id: order.state.customer_id.unwrap_or_default(),
                        currency: order.state.currency.unwrap_or(request.currency),
                        status: order.state.status,
                    };
                    let cmd = PaymentCommand::Create(CreatePayment {
                        payment_id: request.payment_id,
                        amount: request.amount,
                        currency: request.currency,
                        method: request.method.clone(),
                        order: facts,
                        created_at: request.at,
                    });
                    let read = StreamVersion {
                        aggregate_type: Order::TYPE.to_owned(),
                        aggregate_id: order_id.clone(),
                        version: order.version,
                    };
                    let facts = Facts {
                        reads: vec![read],
                        payment_cap: Some(PaymentCap {
                            order_id: order_id.clone(),
                            max: MAX_PAYMENTS_PER_ORDER,
                        }),
                    };
                    Ok((cmd, facts))
                },
            )
            .await
    }

    pub async fn payment(
        &self,
        payment_id: Uuid,
        expected: Option<u64>,
        cmd: PaymentCommand,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.store
            .execute::<Payment>(&payment_id.to_string(), expected, cmd, meta)
            .await
    }

    /// How many payments were created for an order.
    pub async fn payment_count_of_order(&self, order_id: Uuid) -> Result<i64, CommandError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM event_store.events
              WHERE aggregate_type = 'payment' AND sequence = 1 AND payload ->> 'order_id' = $1",
        )
        .bind(order_id.to_string())
        .fetch_one(self.pool())
        .await?)
    }

    /// Every payment created for an order (its id and its current state).
    pub async fn payments_of_order(
        &self,
        order_id: Uuid,
    ) -> Result<Vec<(String, Versioned<Payment>)>, CommandError> {
        let ids = crate::history::payment_ids_of_order(self.pool(), order_id).await?;
        let mut payments = Vec::with_capacity(ids.len());
        for id in ids {
            let payment = self.store.load::<Payment>(&id).await?;
            payments.push((id, payment));
        }
        Ok(payments)
    }
}

/// A stream created by `meta` must be in the channel of the stream it refers to (`what`):
/// 409 `channel-mismatch` otherwise.
fn same_channel(meta: &CommandMetadata, other: &str, what: &str) -> Result<(), CommandError> {
    let channel = meta.channel.as_deref().unwrap_or(crate::channels::DEFAULT);
    if channel == other {
        Ok(())
    } else {
        Err(DomainError::refused(
            "channel-mismatch",
            format!("{what} belongs to another channel than `{channel}`"),
        )
        .into())
    }
}

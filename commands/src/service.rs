//! The commands the API offers, including the few that need to read another stream first
//! (an order's customer, a payment's order, the payments covering a shipment).

use chrono::{DateTime, Utc};
use ordo_domain::customer::{Customer, CustomerCommand, RegisterCustomer};
use ordo_domain::order::{Order, OrderCommand, PlaceOrder, ShipOrder, ShipmentLine};
use ordo_domain::payment::{CreatePayment, OrderFacts, Payment, PaymentCommand};
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency, DomainError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::Versioned;
use crate::{CommandError, CommandMetadata, Committed, EventStore};

pub struct Commands {
    store: EventStore,
}

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

    /// Place an order for a registered customer.
    pub async fn place_order(
        &self,
        cmd: PlaceOrder,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let customer = self
            .store
            .load::<Customer>(&cmd.customer_id.to_string())
            .await?;
        if !customer.state.exists() {
            return Err(DomainError::invalid("customer_id", "no customer has this id").into());
        }
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

    /// Ship (part of) an order, if its payments cover its total right now.
    pub async fn ship_order(
        &self,
        order_id: Uuid,
        expected: Option<u64>,
        request: ShipRequest,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let payments = self.payments_of_order(order_id).await?;
        let covered = Amount::checked_sum(payments.iter().map(|p| p.state.coverage()))
            .ok_or_else(|| CommandError::Internal("payment coverage overflows".into()))?;
        let cmd = OrderCommand::Ship(ShipOrder {
            carrier: request.carrier,
            tracking_number: request.tracking_number,
            lines: request.lines,
            covered,
            at: request.at,
        });
        self.order(order_id, expected, cmd, meta).await
    }

    /// Create a pending payment for an existing order, in the order's currency.
    pub async fn create_payment(
        &self,
        request: NewPayment,
        meta: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let order = self
            .store
            .load::<Order>(&request.order_id.to_string())
            .await?
            .state;
        let facts = OrderFacts {
            order_id: request.order_id,
            customer_id: order.customer_id.unwrap_or_default(),
            currency: order.currency.unwrap_or(request.currency),
            status: order.status,
        };
        let cmd = PaymentCommand::Create(CreatePayment {
            payment_id: request.payment_id,
            amount: request.amount,
            currency: request.currency,
            method: request.method,
            order: facts,
            created_at: request.at,
        });
        self.store
            .execute::<Payment>(&request.payment_id.to_string(), None, cmd, meta)
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

    /// Every payment created for an order, folded to its current state.
    pub async fn payments_of_order(
        &self,
        order_id: Uuid,
    ) -> Result<Vec<Versioned<Payment>>, CommandError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM event_store.events
              WHERE aggregate_type = 'payment' AND sequence = 1
                AND payload ->> 'order_id' = $1
              ORDER BY global_position",
        )
        .bind(order_id.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut payments = Vec::with_capacity(ids.len());
        for id in ids {
            payments.push(self.store.load::<Payment>(&id).await?);
        }
        Ok(payments)
    }
}

//! What the read models share: the error a batch can fail with, and the closed set of
//! projections.

use sqlx::PgConnection;

use crate::{customers, orders, payments};
use ordo_commands::feed::{DecodeError, FeedEvent};
use ordo_domain::event::types;

/// Why a batch could not be applied. The runner records it, stops advancing, and retries.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The event contradicts the read model (e.g. a shipment for an order never placed).
    #[error("event {position}: {reason}")]
    Inconsistent { position: i64, reason: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl ApplyError {
    pub fn inconsistent(event: &FeedEvent, reason: impl Into<String>) -> Self {
        Self::Inconsistent {
            position: event.checkpoint.global_position,
            reason: reason.into(),
        }
    }

    /// The position of the event at fault, when one is.
    pub fn position(&self) -> Option<i64> {
        match self {
            Self::Decode(e) => Some(e.position),
            Self::Inconsistent { position, .. } => Some(*position),
            Self::Db(_) => None,
        }
    }
}

/// The read models. A closed set: each is a module with its DDL and a batch `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    Orders,
    Payments,
    Customers,
}

pub const LIVE: &str = "projections";
pub const SHADOW: &str = "projections_rebuild";

impl Projection {
    pub const ALL: [Projection; 3] = [Self::Orders, Self::Payments, Self::Customers];

    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Payments => "payments",
            Self::Customers => "customers",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The tables this projection owns, created in `schema` by [`Projection::ddl`].
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Self::Orders => orders::TABLES,
            Self::Payments => payments::TABLES,
            Self::Customers => customers::TABLES,
        }
    }

    /// The event types this projection reads; the feed leaves the others' payloads out.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            Self::Orders => &[
                types::ORDER_PLACED,
                types::ORDER_CONFIRMED,
                types::ORDER_CANCELLED,
                types::ORDER_SHIPPED,
                types::ORDER_DELIVERED,
                types::ORDER_PAYMENT_STATUS_CHANGED,
                types::PAYMENT_CREATED,
                types::PAYMENT_AUTHORIZED,
                types::PAYMENT_CAPTURED,
                types::PAYMENT_REFUNDED,
                types::PAYMENT_VOIDED,
                types::PAYMENT_FAILED,
            ],
            Self::Payments => types::PAYMENT,
            Self::Customers => &[
                types::CUSTOMER_REGISTERED,
                types::CUSTOMER_NOTE_ADDED,
                types::ORDER_PLACED,
                types::ORDER_CANCELLED,
                types::ORDER_DELIVERED,
                types::PAYMENT_REFUNDED,
            ],
        }
    }

    pub fn ddl(self, schema: &str) -> String {
        let template = match self {
            Self::Orders => include_str!("sql/orders.sql"),
            Self::Payments => include_str!("sql/payments.sql"),
            Self::Customers => include_str!("sql/customers.sql"),
        };
        template.replace("{schema}", schema)
    }

    /// Apply a batch of feed events to this projection's tables in `schema`. Deterministic
    /// and free of side effects beyond those tables, so rebuilds may run it again.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[FeedEvent],
    ) -> Result<(), ApplyError> {
        match self {
            Self::Orders => orders::apply(conn, schema, events).await,
            Self::Payments => payments::apply(conn, schema, events).await,
            Self::Customers => customers::apply(conn, schema, events).await,
        }
    }

    /// A stable advisory-lock key per projection.
    pub fn lock_key(self) -> i64 {
        0x0_4d_4f_52_44 * 16
            + match self {
                Self::Orders => 1,
                Self::Payments => 2,
                Self::Customers => 3,
            }
    }
}

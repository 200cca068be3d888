//! What the read models share: the error a batch can fail with, events decoded once for
//! every read model, and the closed set of projections with their versions.

use sqlx::PgConnection;

use crate::{customers, orders, payments};
use ordo_commands::feed::{DecodeError, FeedEvent};
use ordo_commands::privacy::Keyring;
use ordo_domain::customer::CustomerEvent;
use ordo_domain::event::types;
use ordo_domain::order::OrderEvent;
use ordo_domain::payment::PaymentEvent;

/// A feed event's payload as the domain type of its aggregate, parsed once and shared by
/// every read model that reads it (a rebuild of all three decodes the log once).
#[derive(Debug, Clone)]
pub enum DomainEvent {
    Order(OrderEvent),
    Payment(PaymentEvent),
    Customer(CustomerEvent),
    /// No payload was asked for (a type no reader of this batch wants) or an aggregate no
    /// read model follows: the checkpoint passes over it.
    Skipped,
    /// The payload cannot be read; whichever read model needs it stops there.
    Undecodable(DecodeError),
}

/// A feed event with its payload decoded (and the raw payload dropped).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub envelope: FeedEvent,
    pub event: DomainEvent,
}

impl Decoded {
    pub fn new(mut envelope: FeedEvent) -> Self {
        let event = if envelope.payload.is_empty() {
            DomainEvent::Skipped
        } else {
            let decoded = match envelope.aggregate_type.as_str() {
                "order" => envelope.decode().map(DomainEvent::Order),
                "payment" => envelope.decode().map(DomainEvent::Payment),
                "customer" => envelope.decode().map(DomainEvent::Customer),
                _ => Ok(DomainEvent::Skipped),
            };
            decoded.unwrap_or_else(DomainEvent::Undecodable)
        };
        envelope.payload = String::new();
        envelope.metadata = String::new();
        Self { envelope, event }
    }

    pub fn position(&self) -> i64 {
        self.envelope.checkpoint.global_position
    }

    /// The decode error, as the error of the read model that needed this event.
    pub fn undecodable(&self) -> Option<ApplyError> {
        match &self.event {
            DomainEvent::Undecodable(e) => Some(ApplyError::Decode(DecodeError {
                position: e.position,
                event_type: e.event_type.clone(),
                reason: e.reason.clone(),
            })),
            _ => None,
        }
    }
}

/// Decode a batch read from the feed.
pub fn decode_all(events: Vec<FeedEvent>) -> Vec<Decoded> {
    events.into_iter().map(Decoded::new).collect()
}

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

/// The version of a read model's code: bump it when what the read model computes or how
/// its tables look changes. A process that finds its tables built by another version
/// rebuilds them into the shadow schema while the old ones keep serving (ADR 0014).
pub type Version = i32;

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

    /// The version this code builds (see [`Version`]).
    pub fn version(self) -> Version {
        match self {
            Self::Orders => 1,
            Self::Payments => 1,
            // 2: money sums in `numeric`.
            Self::Customers => 2,
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
                types::CUSTOMER_ERASED,
                types::ORDER_PLACED,
                types::ORDER_CANCELLED,
                types::ORDER_DELIVERED,
                types::PAYMENT_REFUNDED,
            ],
        }
    }

    /// Every event type some of `projections` reads, each once (what one read of the feed
    /// for all of them asks for).
    pub fn event_types_of(projections: impl IntoIterator<Item = Self>) -> Vec<&'static str> {
        let mut types: Vec<&'static str> = projections
            .into_iter()
            .flat_map(|p| p.event_types().iter().copied())
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    fn template(self) -> &'static str {
        match self {
            Self::Orders => include_str!("sql/orders.sql"),
            Self::Payments => include_str!("sql/payments.sql"),
            Self::Customers => include_str!("sql/customers.sql"),
        }
    }

    /// The tables and their indexes, in `schema`.
    pub fn ddl(self, schema: &str) -> String {
        self.template().replace("{schema}", schema)
    }

    /// Every table and index the DDL creates, each as `schema.name`: what is already there
    /// when none is missing, so the DDL need not run (see `runner::prepare`).
    pub fn relations(self, schema: &str) -> Vec<String> {
        self.template()
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                if let Some(table) = line.strip_prefix("CREATE TABLE IF NOT EXISTS {schema}.") {
                    let name = table.split([' ', '(']).next()?;
                    Some(format!("{schema}.{name}"))
                } else {
                    let index = line
                        .strip_prefix("CREATE INDEX IF NOT EXISTS ")
                        .or_else(|| line.strip_prefix("CREATE UNIQUE INDEX IF NOT EXISTS "))?;
                    let name = index.split(' ').next()?;
                    Some(format!("{schema}.{name}"))
                }
            })
            .collect()
    }

    /// The tables with their primary keys only: a bulk load fills them, then
    /// [`Projection::index_ddl`] adds the secondary indexes in one pass each.
    pub fn table_ddl(self, schema: &str) -> String {
        self.split_ddl(false).replace("{schema}", schema)
    }

    /// The secondary indexes (`CREATE INDEX IF NOT EXISTS`, so running it again is harmless).
    pub fn index_ddl(self, schema: &str) -> String {
        self.split_ddl(true).replace("{schema}", schema)
    }

    /// The template's statements that are (or are not) index creations to defer until
    /// after a bulk load; each index statement in the templates is on one line. An index
    /// the read model's own `apply` looks rows up through (marked `-- read by the fold`)
    /// is built with its table: without it every batch of the load would scan the table.
    fn split_ddl(self, indexes: bool) -> String {
        self.template()
            .lines()
            .filter(|line| {
                let deferred = line.trim_start().starts_with("CREATE INDEX")
                    && !line.contains("-- read by the fold");
                deferred == indexes
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Apply a batch of feed events to this projection's tables in `schema`. Deterministic
    /// and free of side effects beyond those tables, so rebuilds may run it again (sealed
    /// personal values differ in their random nonce only). `keys` seal the personal values
    /// a read model keeps (ADR 0020).
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[Decoded],
        keys: &Keyring,
    ) -> Result<(), ApplyError> {
        match self {
            Self::Orders => orders::apply(conn, schema, events).await,
            Self::Payments => payments::apply(conn, schema, events).await,
            Self::Customers => customers::apply(conn, schema, events, keys).await,
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

    /// The advisory-lock key of this projection's rebuild: held by the one process that
    /// builds its shadow tables, which need not be the one leading the live tables.
    pub fn rebuild_lock_key(self) -> i64 {
        self.lock_key() + 0x100
    }

    /// The advisory-lock key that serializes creating this projection's live tables,
    /// held for the one transaction that creates them.
    pub fn ddl_lock_key(self) -> i64 {
        self.lock_key() + 0x200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_the_orders_fold_reads_through_is_built_with_its_table() {
        let tables = Projection::Orders.table_ddl(SHADOW);
        let indexes = Projection::Orders.index_ddl(SHADOW);
        assert!(tables.contains("order_payments_by_order ON projections_rebuild.order_payments"));
        assert!(!indexes.contains("order_payments_by_order"));
        assert!(indexes.contains("orders_by_customer") && indexes.contains("orders_by_status"));
        assert!(!tables.contains("orders_by_customer"));
    }

    #[test]
    fn relations_name_every_table_and_index_the_ddl_creates() {
        for projection in Projection::ALL {
            let ddl = projection.ddl(LIVE);
            let relations = projection.relations(LIVE);
            // Every statement: one that `relations` cannot read fails here.
            let creates = ddl.matches("CREATE ").count();
            assert_eq!(relations.len(), creates, "{projection:?}: {relations:?}");
            for relation in &relations {
                let name = relation.strip_prefix("projections.").unwrap();
                assert!(!name.contains(['.', ' ', '(', '{']), "{relation}");
                assert!(ddl.contains(&format!(" {name} ")) || ddl.contains(&format!(".{name} ")));
            }
        }
        assert_eq!(
            Projection::Orders.relations(LIVE),
            [
                "projections.orders",
                "projections.orders_by_customer",
                "projections.orders_by_status",
                "projections.orders_by_channel",
                "projections.order_payments",
                "projections.order_payments_by_order",
            ]
        );
    }
}

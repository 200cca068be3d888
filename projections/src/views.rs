//! The read models' views: one type per response. Each is what the SQL row maps to
//! (`FromRow`), what the API answers (`Serialize`) and what the OpenAPI document describes
//! (`ToSchema`), so the three cannot drift apart. Field names and JSON shapes are the
//! API's contract: renaming a field here is a breaking change of `/v1`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

/// A page of a list; `next_cursor` is the `cursor` for the next page, null on the last.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An order's lifecycle status, as stored and as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Placed,
        Self::Confirmed,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| format!("`{s}` is not an order status"))
    }
}

/// One line of an order: what was ordered, at what price, and how much of it has shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    /// Minor units.
    pub unit_price: i64,
    /// `quantity × unit_price`, minor units.
    pub line_total: i64,
    /// How many of this line have shipped so far.
    pub shipped: i64,
}

/// The orders read model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// The sales channel it belongs to.
    pub channel: String,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    /// `unpaid`, `authorized`, `paid`, `partially_refunded` or `refunded`.
    pub payment_status: String,
    /// `unfulfilled`, `partially_shipped`, `shipped` or `delivered`.
    pub fulfillment_status: String,
    pub currency: String,
    /// Minor units.
    pub total: i64,
    pub line_count: i32,
    #[schema(value_type = Vec<OrderLine>)]
    pub lines: Json<Vec<OrderLine>>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The order stream's version (also the `ETag`).
    pub version: i64,
}

/// The payments read model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// The sales channel it belongs to.
    pub channel: String,
    /// `pending`, `authorized`, `captured`, `refunded`, `voided` or `failed`.
    pub status: String,
    pub currency: String,
    /// Minor units, as are the three sums below.
    pub amount: i64,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub method: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The payment stream's version (also the `ETag`).
    pub version: i64,
}

/// The CRM customer 360.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = Customer)]
pub struct CustomerView {
    pub id: Uuid,
    /// The sales channel it belongs to.
    pub channel: String,
    /// Null for a customer only known from orders (or erased).
    pub email: Option<String>,
    pub name: Option<String>,
    pub order_count: i64,
    pub cancelled_count: i64,
    pub open_orders: i64,
    pub notes_count: i64,
    pub first_order_at: Option<DateTime<Utc>>,
    pub last_order_at: Option<DateTime<Utc>>,
    pub registered_at: Option<DateTime<Utc>>,
    /// Per currency code.
    #[sqlx(skip)]
    pub spent: BTreeMap<String, Spent>,
    /// Whether `email` and `name` are still sealed as the table holds them (ADR 0020): the
    /// queries open them before answering. Never answered.
    #[serde(skip)]
    pub sealed: bool,
}

/// A customer's spending in one currency, minor units. Sums over many orders may pass
/// 2^63: they are JSON integers of any size (never strings, never floats).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Spent {
    pub gross: i128,
    pub refunded: i128,
    pub net: i128,
    /// `gross / orders` over orders not cancelled, rounded down.
    pub average_order_value: i128,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_status_is_answered_as_it_is_stored() {
        for status in OrderStatus::ALL {
            let answered = serde_json::to_value(status).unwrap();
            assert_eq!(answered, status.as_str());
            assert_eq!(
                OrderStatus::try_from(status.as_str().to_owned()),
                Ok(status)
            );
        }
        assert!(OrderStatus::parse("lost").is_none());
    }
}

//! A stream's state folded from the log, for `GET .../state` (the audit view: every field
//! the aggregate holds, richer than the read models). One type per aggregate: what the
//! handler answers and what the OpenAPI document describes.

use chrono::{DateTime, Utc};
use ordo_domain::customer::Customer;
use ordo_domain::order::{FulfillmentStatus, Order, OrderLine};
use ordo_domain::payment::Payment;
use ordo_domain::personal::{self, Personal};
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// An order as folded from its stream up to `version`.
#[derive(Serialize, ToSchema)]
pub struct OrderState {
    pub id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// `none` (not placed at that point), `placed`, `confirmed`, `shipped`, `delivered` or
    /// `cancelled`.
    pub status: &'static str,
    /// As the process manager last recorded it: `unpaid`, `authorized`, `paid`,
    /// `partially_refunded` or `refunded`.
    pub payment_status: &'static str,
    /// `unfulfilled`, `partially_shipped`, `shipped` or `delivered`.
    #[schema(value_type = String)]
    pub fulfillment_status: FulfillmentStatus,
    #[schema(value_type = Option<String>)]
    pub currency: Option<Currency>,
    /// Minor units.
    #[schema(value_type = i64)]
    pub total: Amount,
    pub line_count: usize,
    #[schema(value_type = Vec<ordo_projections::views::OrderLine>)]
    pub lines: Vec<OrderLine>,
    /// The address in clear, or `"[erased]"` / `"[encrypted]"` ([`personal`]).
    pub shipping_address: Option<Value>,
    pub shipments: u32,
    #[schema(value_type = Option<String>)]
    pub cancellation_reason: Option<Text>,
    pub placed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: u64,
}

/// A payment as folded from its stream up to `version`. Money in minor units.
#[derive(Serialize, ToSchema)]
pub struct PaymentState {
    pub id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// `none` (not created at that point), `pending`, `authorized`, `captured`,
    /// `partially_refunded`, `refunded`, `voided` or `failed`.
    pub status: &'static str,
    #[schema(value_type = Option<String>)]
    pub currency: Option<Currency>,
    #[schema(value_type = i64)]
    pub amount: Amount,
    #[schema(value_type = i64)]
    pub authorized: Amount,
    #[schema(value_type = i64)]
    pub captured: Amount,
    #[schema(value_type = i64)]
    pub refunded: Amount,
    #[schema(value_type = Option<String>)]
    pub method: Option<Text>,
    #[schema(value_type = Option<String>)]
    pub provider_reference: Option<Text>,
    #[schema(value_type = Option<String>)]
    pub failure_reason: Option<Text>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: u64,
}

/// A customer as folded from its stream up to `version`. Each personal field is in clear,
/// or `"[erased]"` / `"[encrypted]"` ([`personal`]).
#[derive(Serialize, ToSchema)]
pub struct CustomerState {
    pub id: Option<Uuid>,
    pub email: Option<Value>,
    pub name: Option<Value>,
    pub phone: Option<Value>,
    pub notes_count: usize,
    pub notes: Vec<NoteState>,
    pub registered_at: Option<DateTime<Utc>>,
    pub erased_at: Option<DateTime<Utc>>,
    pub version: u64,
}

/// A note support added to a customer.
#[derive(Serialize, ToSchema)]
pub struct NoteState {
    pub id: Uuid,
    pub text: Value,
    pub added_at: DateTime<Utc>,
}

pub fn order(order: &Order, version: u64) -> OrderState {
    OrderState {
        id: order.id,
        customer_id: order.customer_id,
        status: order.status.as_str(),
        payment_status: order.payment_status.as_str(),
        fulfillment_status: order.fulfillment_status(),
        currency: order.currency,
        total: order.total,
        line_count: order.lines.len(),
        lines: order.lines.clone(),
        shipping_address: order.shipping_address.as_ref().map(personal),
        shipments: order.shipments,
        cancellation_reason: order.cancellation_reason.clone(),
        placed_at: order.placed_at,
        updated_at: order.updated_at,
        version,
    }
}

pub fn payment(payment: &Payment, version: u64) -> PaymentState {
    PaymentState {
        id: payment.id,
        order_id: payment.order_id,
        customer_id: payment.customer_id,
        status: payment.status.as_str(),
        currency: payment.currency,
        amount: payment.amount,
        authorized: payment.authorized,
        captured: payment.captured,
        refunded: payment.refunded,
        method: payment.method.clone(),
        provider_reference: payment.provider_reference.clone(),
        failure_reason: payment.failure_reason.clone(),
        created_at: payment.created_at,
        updated_at: payment.updated_at,
        version,
    }
}

pub fn customer(customer: &Customer, version: u64) -> CustomerState {
    let notes = customer
        .notes
        .iter()
        .map(|n| NoteState {
            id: n.id,
            text: personal(&n.text),
            added_at: n.added_at,
        })
        .collect();
    CustomerState {
        id: customer.id,
        email: customer.email.as_ref().map(personal),
        name: customer.name.as_ref().map(personal),
        phone: customer.phone.as_ref().map(personal),
        notes_count: customer.notes.len(),
        notes,
        registered_at: customer.registered_at,
        erased_at: customer.erased_at,
        version,
    }
}

/// A personal field as a person reads it: the clear value, `"[erased]"` for an erased
/// customer's, `"[encrypted]"` for one sealed with a key this process does not hold.
pub fn personal<T: serde::Serialize>(value: &Personal<T>) -> Value {
    match value {
        Personal::Clear(clear) => json!(clear),
        Personal::Sealed(sealed) if sealed.is_withheld() => Value::from(personal::ERASED),
        Personal::Sealed(_) => Value::from(personal::UNREADABLE),
    }
}

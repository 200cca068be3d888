//! JSON shapes of a stream's state folded from the log, for `GET .../state` (the audit
//! view: every field the aggregate holds, richer than the read models).

use ordo_domain::customer::Customer;
use ordo_domain::order::Order;
use ordo_domain::payment::Payment;
use ordo_domain::personal::{self, Personal};
use serde_json::{json, Value};

pub fn order(order: &Order, version: u64) -> Value {
    json!({
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.as_str(),
        "payment_status": order.payment_status.as_str(),
        "fulfillment_status": order.fulfillment_status(),
        "currency": order.currency,
        "total": order.total,
        "line_count": order.lines.len(),
        "lines": order.lines,
        "shipping_address": order.shipping_address.as_ref().map(personal),
        "shipments": order.shipments,
        "cancellation_reason": order.cancellation_reason,
        "placed_at": order.placed_at,
        "updated_at": order.updated_at,
        "version": version,
    })
}

pub fn payment(payment: &Payment, version: u64) -> Value {
    json!({
        "id": payment.id,
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
        "status": payment.status.as_str(),
        "currency": payment.currency,
        "amount": payment.amount,
        "authorized": payment.authorized,
        "captured": payment.captured,
        "refunded": payment.refunded,
        "method": payment.method,
        "provider_reference": payment.provider_reference,
        "failure_reason": payment.failure_reason,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "version": version,
    })
}

pub fn customer(customer: &Customer, version: u64) -> Value {
    let notes: Vec<Value> = customer
        .notes
        .iter()
        .map(|n| json!({"id": n.id, "text": personal(&n.text), "added_at": n.added_at}))
        .collect();
    json!({
        "id": customer.id,
        "email": customer.email.as_ref().map(personal),
        "name": customer.name.as_ref().map(personal),
        "phone": customer.phone.as_ref().map(personal),
        "notes_count": customer.notes.len(),
        "notes": notes,
        "registered_at": customer.registered_at,
        "erased_at": customer.erased_at,
        "version": version,
    })
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

//! JSON shapes of a stream's state folded from the log, for `GET .../state` (the audit
//! view: every field the aggregate holds, richer than the read models).

use ordo_domain::customer::Customer;
use ordo_domain::order::Order;
use ordo_domain::payment::Payment;
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
        "shipping_address": order.shipping_address,
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
    json!({
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "phone": customer.phone,
        "notes_count": customer.notes.len(),
        "notes": customer.notes,
        "registered_at": customer.registered_at,
        "version": version,
    })
}

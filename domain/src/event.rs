//! What every event type shares: a stable dotted name and a schema version.
//!
//! The name (`order.placed`) is the `event_type` column, the NATS subject suffix and the
//! webhook event type. The version starts at 1 and only grows; a stored event of an older
//! version is upcast on read, before it reaches a fold.

/// Implemented by each aggregate's event enum.
pub trait EventName {
    /// `aggregate.event`, e.g. `order.placed`.
    fn name(&self) -> &'static str;

    /// The schema version this code writes.
    fn schema_version(&self) -> u32 {
        1
    }
}

/// Every event type's name, spelled once. Projections, workers and the process manager
/// match on these; the event enums' `#[serde(rename)]` attributes must repeat the literal
/// (an attribute cannot name a constant), and a test checks that each variant's serde tag,
/// its [`EventName::name`] and its constant agree.
pub mod types {
    pub const ORDER_PLACED: &str = "order.placed";
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_SHIPPED: &str = "order.shipped";
    pub const ORDER_DELIVERED: &str = "order.delivered";
    pub const ORDER_PAYMENT_STATUS_CHANGED: &str = "order.payment_status_changed";
    pub const PAYMENT_CREATED: &str = "payment.created";
    pub const PAYMENT_AUTHORIZED: &str = "payment.authorized";
    pub const PAYMENT_CAPTURED: &str = "payment.captured";
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    pub const PAYMENT_VOIDED: &str = "payment.voided";
    pub const PAYMENT_FAILED: &str = "payment.failed";
    pub const CUSTOMER_REGISTERED: &str = "customer.registered";
    pub const CUSTOMER_NOTE_ADDED: &str = "customer.note_added";
    pub const CUSTOMER_ERASED: &str = "customer.erased";

    /// Every order event type.
    pub const ORDER: &[&str] = &[
        ORDER_PLACED,
        ORDER_CONFIRMED,
        ORDER_CANCELLED,
        ORDER_SHIPPED,
        ORDER_DELIVERED,
        ORDER_PAYMENT_STATUS_CHANGED,
    ];
    /// Every payment event type.
    pub const PAYMENT: &[&str] = &[
        PAYMENT_CREATED,
        PAYMENT_AUTHORIZED,
        PAYMENT_CAPTURED,
        PAYMENT_REFUNDED,
        PAYMENT_VOIDED,
        PAYMENT_FAILED,
    ];
    /// Every customer event type.
    pub const CUSTOMER: &[&str] = &[CUSTOMER_REGISTERED, CUSTOMER_NOTE_ADDED, CUSTOMER_ERASED];
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde_json::Value;

    use super::types;
    use crate::customer::CustomerEvent;
    use crate::order::OrderEvent;
    use crate::payment::PaymentEvent;

    /// The `type` tags serde writes for an event enum, read from its derived JSON Schema.
    fn serde_tags<E: JsonSchema>() -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    if let Some(tag) = map
                        .get("properties")
                        .and_then(|p| p.get("type"))
                        .and_then(|t| t.get("const"))
                        .and_then(Value::as_str)
                    {
                        out.push(tag.to_owned());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let schema = schemars::schema_for!(E);
        let mut out = Vec::new();
        walk(schema.as_value(), &mut out);
        out
    }

    #[test]
    fn the_constants_are_exactly_the_tags_serde_stores() {
        assert_eq!(serde_tags::<OrderEvent>(), types::ORDER);
        assert_eq!(serde_tags::<PaymentEvent>(), types::PAYMENT);
        assert_eq!(serde_tags::<CustomerEvent>(), types::CUSTOMER);
    }

    #[test]
    fn every_event_type_has_a_schema() {
        let schemas: Vec<&str> = crate::schema::event_schemas()
            .iter()
            .map(|s| s.event_type)
            .collect();
        assert_eq!(
            schemas,
            [types::ORDER, types::PAYMENT, types::CUSTOMER].concat()
        );
    }
}

//! The JSON Schema (draft 2020-12) of every event type, at the version the code writes,
//! generated from the Rust types.
//!
//! `schemas/events/<aggregate>.<event>.v<N>.json` holds them. Tests keep the files equal to
//! what this module generates and keep released versions frozen: a change to an event's
//! shape is a new version with an upcaster, never an edit of a released schema (README,
//! "Schemas").
//!
//! A schema describes the event's JSON as it is stored (with its `type` tag) and as NATS
//! carries it (without: `ce-type` names it). Objects are closed (`additionalProperties:
//! false`): a field more is a new version too.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::customer::{CustomerErased, CustomerNoteAdded, CustomerRegistered};
use crate::event::types;
use crate::order::{
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderPaymentStatusChanged, OrderPlaced,
    OrderShipped,
};
use crate::payment::{
    PaymentAuthorized, PaymentCaptured, PaymentCreated, PaymentFailed, PaymentRefunded,
    PaymentVoided,
};

/// One event type's schema at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    /// `aggregate.event`, as [`crate::event::EventName::name`] gives it.
    pub event_type: &'static str,
    pub version: u32,
    pub schema: Value,
}

impl EventSchema {
    /// `order` of `order.placed`.
    pub fn aggregate(&self) -> &'static str {
        self.event_type
            .split_once('.')
            .map_or(self.event_type, |(aggregate, _)| aggregate)
    }

    /// The file under `schemas/events/`: `order.placed.v1.json`.
    pub fn file_name(&self) -> String {
        file_name(self.event_type, self.version)
    }

    /// The CloudEvents type the relay sets (`ce-type`): `ordo.order.placed.v1`.
    pub fn ce_type(&self) -> String {
        format!("ordo.{}.v{}", self.event_type, self.version)
    }

    /// The file's text: canonical (keys sorted), pretty, one trailing newline.
    pub fn file_text(&self) -> String {
        file_text(&self.schema)
    }
}

/// `order.placed.v1.json`.
pub fn file_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

/// The schema's `$id`.
pub fn schema_id(event_type: &str, version: u32) -> String {
    format!("urn:ordo:schema:event:{event_type}:v{version}")
}

/// Every event type at the version the code writes now. The version must be the one the
/// event's `EventName::schema_version` returns; the domain's schema tests fail when they
/// differ, or when an event type is missing here.
pub fn event_schemas() -> Vec<EventSchema> {
    vec![
        generate::<OrderPlaced>(types::ORDER_PLACED, 2),
        generate::<OrderConfirmed>(types::ORDER_CONFIRMED, 1),
        generate::<OrderCancelled>(types::ORDER_CANCELLED, 1),
        generate::<OrderShipped>(types::ORDER_SHIPPED, 1),
        generate::<OrderDelivered>(types::ORDER_DELIVERED, 1),
        generate::<OrderPaymentStatusChanged>(types::ORDER_PAYMENT_STATUS_CHANGED, 1),
        generate::<PaymentCreated>(types::PAYMENT_CREATED, 1),
        generate::<PaymentAuthorized>(types::PAYMENT_AUTHORIZED, 1),
        generate::<PaymentCaptured>(types::PAYMENT_CAPTURED, 1),
        generate::<PaymentRefunded>(types::PAYMENT_REFUNDED, 1),
        generate::<PaymentVoided>(types::PAYMENT_VOIDED, 1),
        generate::<PaymentFailed>(types::PAYMENT_FAILED, 1),
        generate::<CustomerRegistered>(types::CUSTOMER_REGISTERED, 2),
        generate::<CustomerNoteAdded>(types::CUSTOMER_NOTE_ADDED, 2),
        generate::<CustomerErased>(types::CUSTOMER_ERASED, 1),
    ]
}

/// `schemas/events/index.json`: each event type's current version, schema file, NATS
/// subject and CloudEvents type.
pub fn index(schemas: &[EventSchema]) -> Value {
    let events: Vec<Value> = schemas
        .iter()
        .map(|s| {
            json!({
                "type": s.event_type,
                "aggregate": s.aggregate(),
                "version": s.version,
                "schema": s.file_name(),
                "subject": format!("ordo.events.{}", s.event_type),
                "ce_type": s.ce_type(),
            })
        })
        .collect();
    canonical(json!({
        "description": "Every Ordo event type at the schema version the code writes now. Older versions keep their files (listed in RELEASED) and are upcast on read.",
        "events": events,
    }))
}

/// Pretty JSON with sorted keys and a trailing newline, so the bytes (and the hashes in
/// `RELEASED`) do not depend on serde_json's features.
pub fn file_text(value: &Value) -> String {
    format!("{:#}\n", canonical(value.clone()))
}

fn generate<T: JsonSchema>(event_type: &'static str, version: u32) -> EventSchema {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    close_objects(&mut schema);
    if let Value::Object(root) = &mut schema {
        root.insert("$id".into(), schema_id(event_type, version).into());
        root.insert("title".into(), format!("{event_type} v{version}").into());
        if let Some(Value::Object(properties)) = root.get_mut("properties") {
            properties.insert(
                "type".into(),
                json!({
                    "description": "The event type. Stored events carry it; NATS message bodies leave it out (the ce-type header names the type and version).",
                    "const": event_type,
                }),
            );
        }
    }
    EventSchema {
        event_type,
        version,
        schema: canonical(schema),
    }
}

/// Every object schema with properties admits no others.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The same value with every object's keys in sorted order.
pub fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod conformance;

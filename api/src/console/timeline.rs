//! An order's time line from the log: the events of the order and of its payments in global
//! order, each with what it changed in its stream's state (folded with the domain's own
//! `apply`, as `GET /v1/{orders,payments}/{id}/state` does).

use std::collections::HashMap;

use ordo_commands::history::{self, RecordedEvent, Until};
use ordo_commands::privacy::Keyring;
use ordo_domain::order::Order;
use ordo_domain::payment::Payment;
use serde_json::{json, Value};
use uuid::Uuid;

use super::ConsoleError;
use crate::views;

/// Most events read per stream; an order's streams hold a handful.
const MAX_EVENTS: i64 = 1000;

/// One event and what it changed.
pub struct Step {
    /// `order` or `payment`.
    pub stream: &'static str,
    pub stream_id: String,
    pub event: RecordedEvent,
    /// `(field, before, after)` of the stream's state, fields that changed only.
    pub changes: Vec<(String, Value, Value)>,
    /// The stream's state after this event (for the money fields' currency).
    pub after: Value,
}

impl Step {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.event.metadata.get(key).and_then(Value::as_str)
    }
}

/// The order's and its payments' events in global order; empty if no such order.
pub async fn order_timeline(keys: &Keyring, order_id: Uuid) -> Result<Vec<Step>, ConsoleError> {
    let id = order_id.to_string();
    let mut steps = stream_steps(keys, "order", &id).await?;
    for payment in ordo_commands::history::payment_ids_of_order(keys.pool(), order_id).await? {
        steps.extend(stream_steps(keys, "payment", &payment).await?);
    }
    steps.sort_by_key(|s| s.event.position);
    Ok(steps)
}

/// The state of an order or payment stream after `until`, as the audit view shows it.
pub async fn state(
    keys: &Keyring,
    stream: &'static str,
    id: &str,
    until: Until,
) -> Result<(Value, u64), ConsoleError> {
    Ok(if stream == "payment" {
        let s = history::fold_until::<Payment>(keys, id, until).await?;
        (json!(views::payment(&s.state, s.version)), s.version)
    } else {
        let s = history::fold_until::<Order>(keys, id, until).await?;
        (json!(views::order(&s.state, s.version)), s.version)
    })
}

async fn stream_steps(
    keys: &Keyring,
    stream: &'static str,
    id: &str,
) -> Result<Vec<Step>, ConsoleError> {
    let events = history::read_stream(keys, stream, id, 0, MAX_EVENTS).await?;
    let mut before = Value::Null;
    let mut steps = Vec::with_capacity(events.len());
    for event in events {
        let (after, _) = state(keys, stream, id, Until::Version(event.sequence as u64)).await?;
        steps.push(Step {
            stream,
            stream_id: id.to_owned(),
            changes: changes(&before, &after),
            after: after.clone(),
            event,
        });
        before = after;
    }
    Ok(steps)
}

/// Fields of `after` that differ from `before` (the version always does: left out).
pub fn changes(before: &Value, after: &Value) -> Vec<(String, Value, Value)> {
    let empty = serde_json::Map::new();
    let old = before.as_object().unwrap_or(&empty);
    let Some(new) = after.as_object() else {
        return Vec::new();
    };
    new.iter()
        .filter(|(k, _)| k.as_str() != "version" && k.as_str() != "updated_at")
        .filter_map(|(k, v)| {
            let was = old.get(k).cloned().unwrap_or(Value::Null);
            (was != *v).then(|| (k.clone(), was, v.clone()))
        })
        .collect()
}

/// Which step each event id is, to link a causation id to the event that caused it.
pub fn index(steps: &[Step]) -> HashMap<String, usize> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.event.event_id.to_string(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changed_fields_are_listed() {
        let before = json!({"status": "placed", "total": 100, "version": 1});
        let after = json!({"status": "confirmed", "total": 100, "version": 2});
        let c = changes(&before, &after);
        assert_eq!(c, [("status".into(), json!("placed"), json!("confirmed"))]);
        assert_eq!(changes(&Value::Null, &json!({"a": 1})).len(), 1);
    }
}

//! The hash chain over the log: what one link is, computed by the appender and re-computed by
//! the verifier ([`crate::audit`]).
//!
//! `hash(event) = SHA-256(previous ‖ encoding(event))`, where `previous` is the hash of the
//! event just before it in position order (32 zero bytes for the first chained event, or
//! when the event before it predates the chain) and `encoding` is, in this order:
//!
//! - the tag `ordo-chain-v1`, then each of: aggregate type, aggregate id, event type, schema
//!   version, data, metadata as a *field* (its length in bytes as a big-endian u64, then the
//!   UTF-8 bytes);
//! - the sequence as a big-endian i64 (after the aggregate id);
//! - the event id's 16 bytes and the recorded time in microseconds since the Unix epoch as a
//!   big-endian i64 (PostgreSQL keeps microseconds; the appender truncates to them).
//!
//! Data and metadata are JSON in canonical text: object keys sorted by their UTF-8 bytes at
//! every depth, no whitespace, strings and numbers as serde_json writes them. jsonb reorders
//! keys and normalizes what it stores, so the appender hashes this canonical text, stores
//! exactly it, and the verifier re-canonicalizes what jsonb gives back: the same value gives
//! the same text whatever order or spacing jsonb chose.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A link's hash.
pub type Hash = [u8; 32];

/// What the first chained event links to.
pub const ZERO: Hash = [0; 32];

const TAG: &[u8] = b"ordo-chain-v1";

/// One event as the chain sees it. Data and metadata are canonical JSON text
/// ([`canonical`]).
#[derive(Debug, Clone, Copy)]
pub struct Linked<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub schema_version: &'a str,
    pub data: &'a str,
    pub metadata: &'a str,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
}

/// The hash of `event` linked to `previous`.
pub fn link(previous: &Hash, event: &Linked<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(TAG);
    let field = |h: &mut Sha256, s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    field(&mut h, event.aggregate_type);
    field(&mut h, event.aggregate_id);
    h.update(event.sequence.to_be_bytes());
    field(&mut h, event.event_type);
    field(&mut h, event.schema_version);
    field(&mut h, event.data);
    field(&mut h, event.metadata);
    h.update(event.event_id.as_bytes());
    h.update(event.recorded_at.timestamp_micros().to_be_bytes());
    h.finalize().into()
}

/// A time as PostgreSQL stores it: truncated to whole microseconds.
pub fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// `value` as canonical JSON text: keys sorted by their bytes at every depth, no whitespace.
/// Independent of serde_json's map order (a dependency enabling `preserve_order` would
/// otherwise change it).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

fn write(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Parse JSON text as stored (jsonb's own text) and give its canonical form.
pub fn recanonical(text: &str) -> Result<String, serde_json::Error> {
    serde_json::from_str::<Value>(text).map(|v| canonical(&v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn event<'a>(data: &'a str, metadata: &'a str) -> Linked<'a> {
        Linked {
            aggregate_type: "order",
            aggregate_id: "o-1",
            sequence: 1,
            event_type: "order.placed",
            schema_version: "1",
            data,
            metadata,
            event_id: Uuid::nil(),
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn canonical_text_sorts_keys_at_every_depth_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": "é\n"}], "aa": null}, "B": 1.5});
        assert_eq!(
            canonical(&v),
            r#"{"B":1.5,"a":{"aa":null,"z":[1,{"x":"é\n","y":2}]},"b":1}"#
        );
    }

    #[test]
    fn jsonb_style_text_recanonicalizes_to_the_same_text() {
        // jsonb orders keys by length first and puts a space after colons and commas.
        let stored = r#"{"b": 1, "B": 1.5, "a": {"z": [1, {"x": "é\n", "y": 2}], "aa": null}}"#;
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": "é\n"}], "aa": null}, "B": 1.5});
        assert_eq!(recanonical(stored).unwrap(), canonical(&v));
    }

    #[test]
    fn every_field_and_the_previous_hash_change_the_link() {
        let base = event("{}", "{}");
        let h = link(&ZERO, &base);
        assert_eq!(h, link(&ZERO, &base), "deterministic");
        let variants = [
            Linked {
                aggregate_type: "orderx",
                ..base
            },
            Linked {
                aggregate_id: "o-2",
                ..base
            },
            Linked {
                sequence: 2,
                ..base
            },
            Linked {
                event_type: "order.cancelled",
                ..base
            },
            Linked {
                schema_version: "2",
                ..base
            },
            event(r#"{"a":1}"#, "{}"),
            event("{}", r#"{"a":1}"#),
            Linked {
                event_id: Uuid::from_u128(1),
                ..base
            },
            Linked {
                recorded_at: base.recorded_at + chrono::Duration::microseconds(1),
                ..base
            },
        ];
        for v in variants {
            assert_ne!(link(&ZERO, &v), h, "{v:?}");
        }
        assert_ne!(link(&[1; 32], &base), h);
        // Fields are length-prefixed: moving a byte from one field to the next changes it.
        let shifted = Linked {
            aggregate_type: "orde",
            aggregate_id: "ro-1",
            ..base
        };
        assert_ne!(link(&ZERO, &shifted), h);
    }

    #[test]
    fn times_keep_microseconds_only() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(to_micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}

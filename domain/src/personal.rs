//! Personal data in events: each personal field holds its value in clear (events written
//! before encryption, or while it is off) or sealed with the customer's data key (ADR 0020).
//!
//! The domain never seals or opens anything: it decides with clear values, and the command
//! path seals the fields [`personal_fields`] names before the append. No decision reads a
//! personal field, so a stream whose fields are sealed, or can no longer be opened because
//! the customer was erased, folds and decides exactly as before.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::types;

/// A personal field's value: in clear, or sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Personal{T}")]
pub enum Personal<T> {
    Sealed(Sealed),
    Clear(T),
}

/// A personal value sealed with the customer's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Base64 of a 12-byte nonce and the AES-256-GCM ciphertext of the value's JSON, sealed
    /// with the customer's data key; the customer id and the field name are its associated
    /// data. Readers other than Ordo's own cannot open it. Empty when a reader withholds a
    /// value it may not show (the customer was erased).
    pub sealed: String,
}

impl Sealed {
    /// A value withheld from a reader: the customer was erased.
    pub fn withheld() -> Self {
        Self {
            sealed: String::new(),
        }
    }

    pub fn is_withheld(&self) -> bool {
        self.sealed.is_empty()
    }
}

impl<T> Personal<T> {
    /// The clear value, if this reader has it.
    pub fn clear(&self) -> Option<&T> {
        match self {
            Self::Clear(value) => Some(value),
            Self::Sealed(_) => None,
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Self::Clear(value)
    }
}

/// The personal fields (top-level keys) of an event type's payload; each event type that has
/// any names its customer in `customer_id`. Empty for every other type.
pub fn personal_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        types::CUSTOMER_REGISTERED => &["email", "name", "phone"],
        types::CUSTOMER_NOTE_ADDED => &["text"],
        types::ORDER_PLACED => &["shipping_address"],
        _ => &[],
    }
}

/// The field naming the customer whose personal data an event carries.
pub const CUSTOMER_FIELD: &str = "customer_id";

/// What a reader shows in place of a personal field of an erased customer.
pub const ERASED: &str = "[erased]";

/// What a reader shows in place of a sealed field it has no key for (no master key, or not
/// the one that wrapped the customer's key).
pub const UNREADABLE: &str = "[encrypted]";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Address, Email};
    use serde_json::json;

    #[test]
    fn a_clear_value_and_a_sealed_one_read_back_as_themselves() {
        let clear: Personal<Email> = serde_json::from_value(json!("a@example.com")).unwrap();
        assert_eq!(clear.clear().map(Email::as_str), Some("a@example.com"));
        let sealed: Personal<Email> = serde_json::from_value(json!({"sealed": "AAAA"})).unwrap();
        assert_eq!(
            sealed,
            Personal::Sealed(Sealed {
                sealed: "AAAA".into()
            })
        );
        assert_eq!(
            serde_json::to_value(&sealed).unwrap(),
            json!({"sealed": "AAAA"})
        );
    }

    #[test]
    fn an_address_is_never_taken_for_a_sealed_value() {
        let address =
            json!({"line1": "1 Main St", "city": "Paris", "postal_code": "75001", "country": "FR"});
        let read: Personal<Address> = serde_json::from_value(address).unwrap();
        assert!(read.clear().is_some());
    }
}

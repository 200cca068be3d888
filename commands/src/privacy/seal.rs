//! Sealing and opening the personal fields of an event's JSON with a customer's data key.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use ordo_domain::personal::{personal_fields, ERASED, UNREADABLE};
use serde_json::{json, Value};
use uuid::Uuid;

use super::keys::KeyState;

/// A customer's data key (32 random bytes). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        Self(Aes256Gcm::generate_key(&mut OsRng).into())
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// `{"sealed": base64(nonce || ciphertext)}` of `value`'s JSON, bound to the customer
    /// and the field (a sealed value moved to another field or customer does not open).
    pub fn seal(&self, customer: Uuid, field: &str, value: &Value) -> Value {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = value.to_string();
        let aad = associated_data(customer, field);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: &aad,
        };
        let mut sealed = nonce.to_vec();
        // Encryption into a Vec fails only on a message beyond AES-GCM's limit (64 GiB).
        if let Ok(ciphertext) = self.cipher().encrypt(&nonce, payload) {
            sealed.extend(ciphertext);
        }
        json!({ "sealed": base64::engine::general_purpose::STANDARD.encode(sealed) })
    }

    /// The value sealed in `sealed` (the base64 text), if this key sealed it for this
    /// customer and field.
    pub fn open(&self, customer: Uuid, field: &str, sealed: &str) -> Option<Value> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let aad = associated_data(customer, field);
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

fn associated_data(customer: Uuid, field: &str) -> Vec<u8> {
    let mut aad = customer.as_bytes().to_vec();
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// The customer whose personal data an event's payload carries, if its type has any.
pub(super) fn customer_of(event_type: &str, payload: &Value) -> Option<Uuid> {
    if personal_fields(event_type).is_empty() {
        return None;
    }
    payload
        .get(ordo_domain::personal::CUSTOMER_FIELD)
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

/// The customer an event's payload names, read from its JSON text without building the
/// payload's tree; `None` when its type has no personal fields or the text names none.
pub(super) fn customer_in(event_type: &str, json: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        // ordo_domain::personal::CUSTOMER_FIELD (serde takes only a literal; a test checks).
        #[serde(borrow)]
        customer_id: Option<std::borrow::Cow<'a, str>>,
    }
    if personal_fields(event_type).is_empty() {
        return None;
    }
    let named: Named = serde_json::from_str(json).ok()?;
    named.customer_id?.parse().ok()
}

/// Whether [`open_fields`] can change a payload of a customer in `state`: for a fold, the
/// values of a customer with no key to open them with (none, or one this process cannot
/// unwrap) stay as they are.
pub(super) fn can_change(state: &KeyState, mode: Mode) -> bool {
    match (state, mode) {
        (KeyState::Key(_) | KeyState::Erased, _) | (_, Mode::Display) => true,
        (KeyState::None | KeyState::Unreadable, Mode::Fold) => false,
    }
}

/// Seal the personal fields of an event's payload (those present and not null) with the
/// customer's key.
pub fn seal_fields(event_type: &str, payload: &mut Value, customer: Uuid, key: &DataKey) {
    let Some(fields) = payload.as_object_mut() else {
        return;
    };
    for field in personal_fields(event_type) {
        if let Some(value) = fields.get_mut(*field) {
            if !value.is_null() && sealed_text(value).is_none() {
                *value = key.seal(customer, field, value);
            }
        }
    }
}

/// What a reader gets in place of a personal value it may not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For folds and read models (the payload must still deserialize): a value of an erased
    /// customer becomes `{"sealed": ""}` (withheld), one without its key stays sealed.
    Fold,
    /// For people (the audit trail): `"[erased]"` for an erased customer's values,
    /// `"[encrypted]"` for sealed ones without their key.
    Display,
}

/// Open the personal fields of an event's payload for a reader, given the state of the
/// customer's key. Whether any field changed.
pub fn open_fields(
    event_type: &str,
    payload: &mut Value,
    customer: Uuid,
    state: &KeyState,
    mode: Mode,
) -> bool {
    let Some(fields) = payload.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for field in personal_fields(event_type) {
        let Some(value) = fields.get_mut(*field) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let opened = match (state, sealed_text(value)) {
            (KeyState::Erased, _) => None,
            (_, None) => continue,
            (KeyState::Key(key), Some(sealed)) => key.open(customer, field, sealed),
            (KeyState::None | KeyState::Unreadable, Some(_)) => None,
        };
        *value = match (opened, state, mode) {
            (Some(clear), _, _) => clear,
            (None, KeyState::Erased, Mode::Fold) => json!({ "sealed": "" }),
            (None, KeyState::Erased, Mode::Display) => Value::from(ERASED),
            (None, _, Mode::Fold) => continue,
            (None, _, Mode::Display) => Value::from(UNREADABLE),
        };
        changed = true;
    }
    changed
}

/// The base64 text of a sealed value (`{"sealed": "…"}`), or `None` for a clear one.
fn sealed_text(value: &Value) -> Option<&str> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.get("sealed").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Value {
        json!({"customer_id": "018f0000-0000-7000-8000-000000000002", "email": "ada@example.com",
               "name": "Ada", "phone": null, "registered_at": "2026-01-01T00:00:00Z"})
    }

    fn customer() -> Uuid {
        "018f0000-0000-7000-8000-000000000002".parse().unwrap()
    }

    #[test]
    fn the_customer_is_read_from_the_text_as_from_the_tree() {
        assert_eq!(ordo_domain::personal::CUSTOMER_FIELD, "customer_id");
        let text = registered().to_string();
        assert_eq!(customer_in("customer.registered", &text), Some(customer()));
        assert_eq!(
            customer_in("customer.registered", &text),
            customer_of("customer.registered", &registered())
        );
        // A type without personal fields, a body that names no customer or is not JSON.
        assert_eq!(customer_in("order.shipped", &text), None);
        assert_eq!(
            customer_in("customer.registered", r#"{"email": "a@b.c"}"#),
            None
        );
        assert_eq!(customer_in("customer.registered", "not json"), None);
    }

    #[test]
    fn a_fold_changes_nothing_for_a_customer_without_a_key_it_can_use() {
        let mut sealed = registered();
        seal_fields(
            "customer.registered",
            &mut sealed,
            customer(),
            &DataKey::generate(),
        );
        for state in [KeyState::None, KeyState::Unreadable] {
            assert!(!can_change(&state, Mode::Fold));
            for payload in [sealed.clone(), registered()] {
                let mut folded = payload.clone();
                let changed = open_fields(
                    "customer.registered",
                    &mut folded,
                    customer(),
                    &state,
                    Mode::Fold,
                );
                assert!(!changed);
                assert_eq!(folded, payload);
            }
        }
        assert!(can_change(&KeyState::Erased, Mode::Fold));
        assert!(can_change(&KeyState::Key(DataKey::generate()), Mode::Fold));
        assert!(can_change(&KeyState::None, Mode::Display));
    }

    #[test]
    fn sealed_fields_hide_the_clear_text_and_open_with_the_key() {
        let key = DataKey::generate();
        let mut payload = registered();
        seal_fields("customer.registered", &mut payload, customer(), &key);
        let stored = payload.to_string();
        assert!(
            !stored.contains("ada@example.com") && !stored.contains("Ada"),
            "{stored}"
        );
        assert_eq!(payload["phone"], Value::Null);
        assert_eq!(payload["customer_id"], registered()["customer_id"]);

        assert!(open_fields(
            "customer.registered",
            &mut payload,
            customer(),
            &KeyState::Key(key),
            Mode::Fold,
        ));
        assert_eq!(payload, registered());
    }

    #[test]
    fn a_sealed_field_does_not_open_for_another_customer_field_or_key() {
        let key = DataKey::generate();
        let sealed = key.seal(customer(), "email", &json!("ada@example.com"));
        let text = sealed["sealed"].as_str().unwrap();
        assert_eq!(
            key.open(customer(), "email", text),
            Some(json!("ada@example.com"))
        );
        assert_eq!(key.open(customer(), "name", text), None);
        assert_eq!(key.open(Uuid::now_v7(), "email", text), None);
        assert_eq!(DataKey::generate().open(customer(), "email", text), None);
    }

    #[test]
    fn an_erased_customer_s_fields_read_as_erased_whether_sealed_or_clear() {
        let key = DataKey::generate();
        let mut sealed = registered();
        seal_fields("customer.registered", &mut sealed, customer(), &key);
        for payload in [sealed, registered()] {
            let mut shown = payload.clone();
            open_fields(
                "customer.registered",
                &mut shown,
                customer(),
                &KeyState::Erased,
                Mode::Display,
            );
            assert_eq!(shown["email"], json!("[erased]"));
            assert_eq!(shown["name"], json!("[erased]"));
            assert_eq!(shown["phone"], Value::Null);
            let mut folded = payload.clone();
            assert!(open_fields(
                "customer.registered",
                &mut folded,
                customer(),
                &KeyState::Erased,
                Mode::Fold,
            ));
            assert_eq!(folded["email"], json!({"sealed": ""}));
        }
    }

    #[test]
    fn a_sealed_field_without_its_key_reads_as_encrypted_and_a_clear_one_stays() {
        let mut payload = registered();
        seal_fields(
            "customer.registered",
            &mut payload,
            customer(),
            &DataKey::generate(),
        );
        open_fields(
            "customer.registered",
            &mut payload,
            customer(),
            &KeyState::Unreadable,
            Mode::Display,
        );
        assert_eq!(payload["email"], json!("[encrypted]"));
        let mut clear = registered();
        assert!(
            !open_fields(
                "customer.registered",
                &mut clear,
                customer(),
                &KeyState::None,
                Mode::Display,
            ),
            "nothing to open: unchanged"
        );
        assert_eq!(clear, registered());
    }

    #[test]
    fn events_without_personal_fields_are_left_alone() {
        let mut payload = json!({"customer_id": "x", "email": "a@b.c"});
        seal_fields(
            "order.confirmed",
            &mut payload,
            customer(),
            &DataKey::generate(),
        );
        assert_eq!(payload["email"], json!("a@b.c"));
    }
}

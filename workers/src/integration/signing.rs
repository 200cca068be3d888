//! Standard Webhooks signing (`webhook-signature: v1,<base64 HMAC-SHA256>`), endpoint secrets
//! (`whsec_` + base64) and the event-type patterns an endpoint subscribes to.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

const SECRET_PREFIX: &str = "whsec_";
/// Bytes of signing key in a generated secret.
const KEY_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64")]
pub struct InvalidSecret;

/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the key being the base64
/// part of `secret` after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, InvalidSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = BASE64.decode(encoded).map_err(|_| InvalidSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| InvalidSecret)?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// A new secret: `whsec_` + base64 of 24 random bytes (the random bytes of v4 uuids, which
/// come from the operating system's generator).
pub fn new_secret() -> String {
    let mut key = Vec::with_capacity(KEY_BYTES);
    while key.len() < KEY_BYTES {
        let bytes = *Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the version and variant bits: skip them.
        key.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 6 && *i != 8)
                .map(|(_, b)| *b),
        );
    }
    key.truncate(KEY_BYTES);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// Whether a pattern is one an endpoint may subscribe to: `*`, an exact type such as
/// `order.placed`, or a prefix such as `payment.*`. Segments are lower-case letters, digits,
/// `_` and `-`.
pub fn valid_event_type(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, s)| {
        (i == last && i > 0 && *s == "*")
            || (!s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                }))
    })
}

/// The `webhook-signature` header: one `v1,` signature per secret, space-separated, the
/// current secret first (during a rotation the previous one too, as Standard Webhooks
/// allows: a receiver accepts the message if any signature verifies).
pub fn signatures(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, InvalidSecret> {
    let signed: Result<Vec<String>, InvalidSecret> = secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect();
    Ok(signed?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.ok().as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert!(sign("whsec_not base64!", "id", 1, "{}").is_err());
    }

    #[test]
    fn a_new_secret_holds_24_bytes_of_key_and_signs() {
        let secret = new_secret();
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|k| BASE64.decode(k).ok());
        assert_eq!(key.map(|k| k.len()), Some(KEY_BYTES));
        assert_ne!(secret, new_secret());
        assert!(sign(&secret, "id", 1, "{}").is_ok());
    }

    #[test]
    fn only_the_three_pattern_forms_are_valid() {
        for ok in ["*", "order.placed", "payment.*", "customer.note_added"] {
            assert!(valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "order.",
            ".placed",
            "order*",
            "*.placed",
            "order.*.x",
            "Order.Placed",
            "order placed",
            "**",
        ] {
            assert!(!valid_event_type(bad), "{bad}");
        }
    }
}

//! Value objects: private fields, a parsing constructor, and so no invalid value exists.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ValueError;

/// The JSON Schema of a value object: a named definition with what its parser accepts.
macro_rules! value_schema {
    ($name:ident, $schema:tt) => {
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_value!(
    /// A stock-keeping unit: 1–64 characters of letters, digits, `-`, `_` or `.`.
    Sku
);
string_value!(
    /// An e-mail address, trimmed and with its domain in lower case.
    Email
);
string_value!(
    /// Free text that is neither empty nor blank, at most [`Text::MAX_LEN`] characters, and
    /// without [invisible formatting characters](is_invisible_format).
    Text
);

value_schema!(Sku, {
    "description": "A stock-keeping unit: 1 to 64 letters, digits, '-', '_' or '.'.",
    "type": "string",
    "pattern": "^[A-Za-z0-9._-]{1,64}$"
});

// What `Email::parse` accepts, as near as a pattern gets: a local part without blanks or
// '@', and a domain with a dot neither first nor last.
value_schema!(Email, {
    "description": "An e-mail address, trimmed, its domain in lower case.",
    "type": "string",
    "maxLength": 254,
    "pattern": "^[^@\\s]{1,64}@[^.@\\s]([^@\\s]*\\.)+[^.@\\s]+$"
});

// Frozen: released event schemas embed this one, so it cannot state the refusal of
// invisible formatting characters that `Text::parse` adds; the OpenAPI document's (in
// `crate::openapi`) describes the request side.
value_schema!(Text, {
    "description": "Trimmed free text: 1 to 2000 characters, neither starting nor ending with blank space.",
    "type": "string",
    "minLength": 1,
    "maxLength": Text::MAX_LEN,
    "pattern": "^\\S([\\s\\S]*\\S)?$"
});

value_schema!(Quantity, {
    "description": "How many units of a line: a whole number from 1 to 1000000.",
    "type": "integer",
    "format": "uint32",
    "minimum": 1,
    "maximum": Quantity::MAX
});

value_schema!(CountryCode, {
    "description": "An ISO 3166-1 alpha-2 country code, e.g. DE.",
    "type": "string",
    "pattern": "^[A-Z]{2}$"
});

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(valid_char) {
            return Err(ValueError::new(
                "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        let invalid = || ValueError::new("must be an e-mail address such as ada@example.com");
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains(char::is_whitespace)
            && !local.contains(['@', '\0']);
        if !domain_ok || !local_ok || trimmed.len() > 254 {
            return Err(invalid());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }
}

impl Text {
    pub const MAX_LEN: usize = 2000;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        Self::parse_bounded(raw, Self::MAX_LEN)
    }

    /// Trimmed text of 1 to `max` characters.
    pub fn parse_bounded(raw: &str, max: usize) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValueError::new("must not be empty"));
        }
        // Events are stored as jsonb, which cannot hold U+0000.
        if trimmed.contains('\0') {
            return Err(ValueError::new("must not contain NUL characters"));
        }
        if trimmed.chars().count() > max {
            return Err(ValueError::new(format!("must be at most {max} characters")));
        }
        if trimmed.chars().any(is_invisible_format) {
            return Err(ValueError::new(
                "must not contain bidirectional overrides or zero-width characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// Characters that change how text is shown without being seen: bidirectional embeddings,
/// overrides, isolates and marks (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) and
/// zero-width or invisible characters (U+200B–U+200D, U+2060–U+2064, U+FEFF, U+180E). In a
/// name, reason or note they make what support reads, and what a customer's e-mail shows,
/// differ from what was stored ("Trojan Source", CVE-2021-42574), so free text refuses them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// How many units of a line: at least one, at most a million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000_000;

    pub fn new(n: i64) -> Result<Self, ValueError> {
        match u32::try_from(n) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(ValueError::new(format!(
                "must be a whole number from 1 to {}",
                Self::MAX
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Self::new(n).map_err(serde::de::Error::custom)
    }
}

/// A postal address; `country` is an ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Address {
    pub line1: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<Text>,
    pub city: Text,
    pub postal_code: Text,
    pub country: CountryCode,
}

/// ISO 3166-1 alpha-2: two upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValueError::new(
                "must be an ISO 3166-1 alpha-2 country code such as DE",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn skus_are_short_and_plain() {
        assert!(Sku::parse("SKU-1").is_ok());
        assert!(Sku::parse("mug.blue_2").is_ok());
        for bad in ["", "has space", "ü", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_trimmed_and_their_domain_lowercased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "Ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_must_have_content_and_a_bound() {
        assert!(Text::parse("   ").is_err());
        assert_eq!(Text::parse(" hi ").unwrap().as_str(), "hi");
        assert!(Text::parse_bounded("abcd", 3).is_err());
    }

    /// jsonb cannot store U+0000; such text used to fail the command with a 500.
    #[test]
    fn text_and_emails_refuse_nul_characters() {
        assert!(Text::parse("a\0b").is_err());
        assert!(Email::parse("a\0b@example.com").is_err());
    }

    #[test]
    fn text_refuses_bidi_overrides_and_zero_width_characters() {
        for bad in [
            "refund \u{202E}gnp.exe",
            "Ada\u{200B}Lovelace",
            "a\u{2066}b\u{2069}",
            "\u{FEFF}x y",
            "x\u{200D}y",
        ] {
            assert!(Text::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Text::parse("Zoë Ørsted – ✓ 東京").is_ok());
    }

    #[test]
    fn quantities_are_between_one_and_a_million() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert!(Quantity::new(1_000_001).is_err());
        assert_eq!(Quantity::new(7).unwrap().get(), 7);
        assert!(serde_json::from_str::<Quantity>("0").is_err());
    }

    #[test]
    fn country_codes_are_two_upper_case_letters() {
        assert!(CountryCode::parse("DE").is_ok());
        assert!(CountryCode::parse("de").is_err());
        assert!(CountryCode::parse("DEU").is_err());
    }

    proptest! {
        #[test]
        fn any_parsed_sku_round_trips(raw in "[A-Za-z0-9._-]{1,64}") {
            let sku = Sku::parse(&raw).unwrap();
            let json = serde_json::to_string(&sku).unwrap();
            prop_assert_eq!(serde_json::from_str::<Sku>(&json).unwrap(), sku);
        }

        #[test]
        fn quantity_accepts_exactly_its_range(n in any::<i64>()) {
            prop_assert_eq!(Quantity::new(n).is_ok(), (1..=1_000_000).contains(&n));
        }
    }
}

//! What the HTTP API's OpenAPI document says each value object accepts: the request side,
//! as each parsing constructor takes it (before trimming, so `Text` needs only something
//! not blank), where the JSON Schemas of the events (`schemars`, in `values` and `money`)
//! describe the values as stored and are frozen once released. Request bodies and
//! command types that hold these values derive `utoipa::ToSchema` and refer to them.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::money::ISO_4217;
use crate::values::{CountryCode, Email, Quantity, Sku, Text};
use crate::{Amount, Currency};

/// A named schema for a value object: a string or an integer with the constraints its
/// parsing constructor enforces.
macro_rules! value_schema {
    ($name:ident: $kind:ident, |$b:ident| $build:expr) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let $b = ObjectBuilder::new().schema_type(Type::$kind);
                RefOr::T(Schema::Object($build.build()))
            }
        }

        impl ToSchema for $name {}
    };
}

value_schema!(Text: String, |b| b
    .description(Some("Free text: not blank, at most 2000 characters after trimming."))
    .min_length(Some(1))
    .max_length(Some(Text::MAX_LEN))
    .pattern(Some(r"\S"))
    .examples(["called about delivery"]));

value_schema!(Currency: String, |b| b
    .description(Some("An active ISO 4217 currency code."))
    .enum_values(Some(ISO_4217.iter().copied()))
    .examples(["EUR"]));

value_schema!(Sku: String, |b| b
    .description(Some("A stock-keeping unit: 1–64 letters, digits, `-`, `_` or `.`."))
    .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
    .examples(["SKU-1"]));

// What `Email::parse` accepts, as near as a pattern gets.
value_schema!(Email: String, |b| b
    .description(Some("An e-mail address; stored trimmed, its domain in lower case."))
    .max_length(Some(254))
    .pattern(Some(
        r"^[^\s@\x00]{1,64}@[A-Za-z0-9-][A-Za-z0-9.-]*\.[A-Za-z0-9.-]*[A-Za-z0-9-]$"
    ))
    .examples(["ada@example.com"]));

value_schema!(CountryCode: String, |b| b
    .description(Some("An ISO 3166-1 alpha-2 country code."))
    .pattern(Some("^[A-Z]{2}$"))
    .examples(["DE"]));

value_schema!(Quantity: Integer, |b| b
    .description(Some(
        "How many units: a whole number from 1 to 1000000, written without a decimal point."
    ))
    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
    .minimum(Some(1))
    .maximum(Some(f64::from(Quantity::MAX))));

value_schema!(Amount: Integer, |b| b
    .description(Some(
        "An amount in the currency's minor unit (cents for EUR), zero or more, at most 10^15; \
         written without a decimal point (`2999`, not `2999.0`)."
    ))
    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
    .minimum(Some(0))
    .maximum(Some(Amount::MAX.get() as f64))
    .examples([2999]));

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap_or_default()
    }

    #[test]
    fn each_value_objects_schema_states_its_parsers_limits() {
        assert_eq!(schema::<Text>()["maxLength"], json!(2000));
        assert_eq!(schema::<Quantity>()["maximum"], json!(1_000_000));
        assert_eq!(
            schema::<Amount>()["maximum"],
            json!(1_000_000_000_000_000_i64)
        );
        let currencies = schema::<Currency>()["enum"].as_array().map(Vec::len);
        assert_eq!(currencies, Some(ISO_4217.len()));
    }
}

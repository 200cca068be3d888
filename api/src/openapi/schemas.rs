//! The shapes of request bodies, for the OpenAPI document only. Handlers read bodies field by
//! field (`validate.rs`, so that every invalid field is reported at once), so these types
//! describe what they accept; schemathesis (`scripts/fuzz-api`) checks that they match.
//! Responses are not here: each is the type its handler answers with (the read models'
//! views in `ordo_projections::views`, problems in `crate::error`, command results in
//! `crate::respond`).

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

// ------------------------------------------------------------------ value objects

/// A named schema for a value object: a string or integer with the constraints its parsing
/// constructor in `ordo_domain` enforces.
macro_rules! value_schema {
    ($(#[$doc:meta])* $name:ident: $kind:ident, |$b:ident| $build:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let $b = ObjectBuilder::new().schema_type(Type::$kind);
                RefOr::T(Schema::Object($build.build()))
            }
        }

        impl ToSchema for $name {}
    };
}

value_schema!(
    /// Free text: not blank, at most 2000 characters after trimming.
    Text: String, |b| b
        .min_length(Some(1))
        .max_length(Some(2000))
        .pattern(Some(r"\S"))
        .examples(["called about delivery"])
);
value_schema!(
    /// An active ISO 4217 currency code.
    Currency: String, |b| b
        .enum_values(Some(ordo_domain::money::ISO_4217.iter().copied()))
        .examples(["EUR"])
);
value_schema!(
    /// A stock-keeping unit: 1–64 letters, digits, `-`, `_` or `.`.
    Sku: String, |b| b.pattern(Some("^[A-Za-z0-9._-]{1,64}$")).examples(["SKU-1"])
);
value_schema!(
    /// An amount in the currency's minor unit (cents for EUR), above zero and at most
    /// 10^15 (the largest amount).
    PositiveAmount: Integer, |b| b.format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(ordo_domain::Amount::MAX.get() as f64))
        .examples([2999])
);

// ------------------------------------------------------------------ commands

/// A body with nothing to say: `{}` (or no body at all).
#[derive(ToSchema)]
pub struct Empty {}

#[derive(ToSchema)]
pub struct RegisterCustomer {
    /// Generated when absent.
    pub customer_id: Option<Uuid>,
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[^\s@\x00]{1,64}@[A-Za-z0-9-][A-Za-z0-9.-]*\.[A-Za-z0-9.-]*[A-Za-z0-9-]$"
    )]
    pub email: String,
    pub name: Text,
    pub phone: Option<Text>,
    /// The sales channel to create it in: only a global key may name one (default
    /// `default`); a key scoped to a channel creates in its own (naming another is 403).
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
}

#[derive(ToSchema)]
pub struct AddNote {
    pub text: Text,
}

#[derive(ToSchema)]
pub struct PlaceOrder {
    /// Generated when absent.
    pub order_id: Option<Uuid>,
    pub customer_id: Uuid,
    pub currency: Currency,
    #[schema(min_items = 1, max_items = 200)]
    pub lines: Vec<NewLine>,
    pub shipping_address: Option<Address>,
    /// The sales channel to create it in: only a global key may name one (default
    /// `default`); a key scoped to a channel creates in its own (naming another is 403).
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
}

#[derive(ToSchema)]
pub struct NewLine {
    pub sku: Sku,
    pub name: Text,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
    /// Minor units, zero or more, at most 10^15; the order's total is at most 10^15 too.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub unit_price: i64,
}

#[derive(ToSchema)]
pub struct Address {
    pub line1: Text,
    pub line2: Option<Text>,
    pub city: Text,
    pub postal_code: Text,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: String,
}

#[derive(ToSchema)]
pub struct CancelOrder {
    pub reason: Text,
}

#[derive(ToSchema)]
pub struct ShipOrder {
    pub carrier: Text,
    pub tracking_number: Text,
    /// What this shipment holds; everything not yet shipped when absent.
    #[schema(min_items = 1)]
    pub lines: Option<Vec<ShipmentLine>>,
}

#[derive(ToSchema)]
pub struct ShipmentLine {
    pub sku: Sku,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
}

#[derive(ToSchema)]
pub struct CreatePayment {
    /// Generated when absent.
    pub payment_id: Option<Uuid>,
    pub order_id: Uuid,
    pub amount: PositiveAmount,
    pub currency: Currency,
    #[schema(example = "card")]
    pub method: Text,
    /// The sales channel to create it in: only a global key may name one (default
    /// `default`); a key scoped to a channel creates in its own (naming another is 403).
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
}

#[derive(ToSchema)]
pub struct AuthorizePayment {
    pub provider_reference: Text,
    /// Defaults to the payment's amount.
    pub amount: Option<PositiveAmount>,
}

#[derive(ToSchema)]
pub struct CapturePayment {
    pub amount: PositiveAmount,
}

#[derive(ToSchema)]
pub struct RefundPayment {
    pub amount: PositiveAmount,
    pub reason: Text,
}

#[derive(ToSchema)]
pub struct FailPayment {
    pub reason: Text,
}

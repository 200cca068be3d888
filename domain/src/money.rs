//! Money is an integer count of a currency's minor unit plus an ISO 4217 code. No floats.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValueError;

/// Active ISO 4217 alphabetic codes (fund and precious-metal codes left out).
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code such as `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, ValueError> {
        match ISO_4217.iter().find(|known| **known == code) {
            Some(known) => {
                let b = known.as_bytes();
                Ok(Self([b[0], b[1], b[2]]))
            }
            None => Err(ValueError::new(format!(
                "`{code}` is not an ISO 4217 currency code (three upper-case letters, e.g. EUR)"
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from the ASCII table above.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimal places of the currency's minor unit (ISO 4217): 0 for JPY, 3 for KWD, 2
    /// for most.
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// A count of minor units written for people: `2999` EUR → `29.99 EUR`, `500` JPY →
    /// `500 JPY`. Integer arithmetic only, exact for every `i128` (sums over many orders).
    pub fn format_minor(&self, minor_units: impl Into<i128>) -> String {
        let minor_units: i128 = minor_units.into();
        let digits = self.minor_digits();
        if digits == 0 {
            return format!("{minor_units} {self}");
        }
        let scale = 10u128.pow(digits);
        let sign = if minor_units < 0 { "-" } else { "" };
        let abs = minor_units.unsigned_abs();
        format!(
            "{sign}{}.{:0width$} {self}",
            abs / scale,
            abs % scale,
            width = digits as usize
        )
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// A pattern rather than the list of codes: adding a currency must not change a released
/// event schema.
impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An active ISO 4217 alphabetic currency code, e.g. EUR.",
            "type": "string",
            "pattern": "^[A-Z]{3}$"
        })
    }
}

/// A non-negative amount in a currency's minor unit (cents for EUR, yen for JPY), at most
/// [`Amount::MAX`] (10^15 minor units: ten trillion euros).
///
/// The cap leaves room to sum amounts: a sum of fewer than 9,223 maximal amounts still fits
/// an `i64`, and sums across orders (a customer's lifetime spend, a sales bucket) are kept
/// in `i128` and PostgreSQL `numeric`, so no count of orders overflows them.
///
/// Arithmetic is checked: a result beyond the cap is an error, never a wrap or a saturation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: 10^15 minor units. A line, an order's total, a payment, a
    /// capture and a refund are each at most this.
    pub const MAX: Amount = Amount(1_000_000_000_000_000);

    pub fn new(minor_units: i64) -> Result<Self, ValueError> {
        if minor_units < 0 {
            return Err(ValueError::new("must not be negative"));
        }
        Self::at_most_max(minor_units)
    }

    /// A strictly positive amount, for captures, refunds and payments.
    pub fn positive(minor_units: i64) -> Result<Self, ValueError> {
        if minor_units <= 0 {
            return Err(ValueError::new("must be greater than zero"));
        }
        Self::at_most_max(minor_units)
    }

    fn at_most_max(minor_units: i64) -> Result<Self, ValueError> {
        if minor_units > Self::MAX.0 {
            return Err(ValueError::new(format!(
                "must be at most {} minor units",
                Self::MAX.0
            )));
        }
        Ok(Self(minor_units))
    }

    /// `Some` when `minor_units` is within `0..=MAX`.
    fn checked(minor_units: i64) -> Option<Self> {
        (0..=Self::MAX.0)
            .contains(&minor_units)
            .then_some(Self(minor_units))
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `None` when the sum is beyond [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).and_then(Self::checked)
    }

    /// `None` when the result would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).and_then(Self::checked)
    }

    /// `None` when the product is beyond [`Amount::MAX`].
    pub fn checked_mul(self, factor: u32) -> Option<Amount> {
        self.0
            .checked_mul(i64::from(factor))
            .and_then(Self::checked)
    }

    /// Sum of amounts; `None` beyond [`Amount::MAX`].
    pub fn checked_sum(amounts: impl IntoIterator<Item = Amount>) -> Option<Amount> {
        amounts
            .into_iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        Self::new(v).map_err(serde::de::Error::custom)
    }
}

// Frozen: released event schemas embed this one, so it cannot state the cap of
// `Amount::MAX` that `Amount::new` adds; the OpenAPI document's (`crate::openapi`) does.
impl JsonSchema for Amount {
    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A non-negative count of the currency's minor unit (cents for EUR, yen for JPY). Never a float.",
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "maximum": i64::MAX
        })
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn minor(amount: i64, code: &str) -> String {
        Currency::parse(code)
            .expect("a known code")
            .format_minor(amount)
    }

    #[test]
    fn money_is_written_with_the_currency_s_minor_unit() {
        assert_eq!(minor(2999, "EUR"), "29.99 EUR");
        assert_eq!(minor(5, "EUR"), "0.05 EUR");
        assert_eq!(minor(-150, "USD"), "-1.50 USD");
        assert_eq!(minor(500, "JPY"), "500 JPY");
        assert_eq!(minor(1234, "KWD"), "1.234 KWD");
        assert_eq!(minor(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
        assert_eq!(
            Currency::parse("EUR").unwrap().format_minor(i128::MIN),
            "-1701411834604692317316873037158841057.28 EUR"
        );
    }

    #[test]
    fn known_codes_parse_and_unknown_codes_do_not() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".into())
        );
        assert!(Currency::parse("JPY").is_ok());
        for bad in ["eur", "EURO", "", "XXX", "E1R", "ABC"] {
            assert!(Currency::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn currency_round_trips_through_json() {
        let c = Currency::parse("GBP").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"GBP\"");
        assert_eq!(serde_json::from_str::<Currency>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn negative_amounts_cannot_exist() {
        assert!(Amount::new(-1).is_err());
        assert!(Amount::positive(0).is_err());
        assert!(serde_json::from_str::<Amount>("-5").is_err());
        assert_eq!(Amount::new(0).unwrap(), Amount::ZERO);
    }

    const MAX: i64 = Amount::MAX.get();

    #[test]
    fn the_largest_amount_is_ten_to_the_fifteen_minor_units() {
        assert_eq!(Amount::new(1_000_000_000_000_000).map(Amount::get), Ok(MAX));
        assert!(Amount::new(1_000_000_000_000_001).is_err());
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Some(Amount::MAX));
        assert_eq!(Amount::MAX.checked_add(Amount::new(1).unwrap()), None);
        assert_eq!(
            Amount::new(MAX / 2).unwrap().checked_mul(2),
            Some(Amount::MAX)
        );
    }

    #[test]
    fn subtraction_below_zero_is_none() {
        let a = Amount::new(5).unwrap();
        let b = Amount::new(7).unwrap();
        assert_eq!(a.checked_sub(b), None);
        assert_eq!(b.checked_sub(a), Some(Amount::new(2).unwrap()));
    }

    proptest! {
        #[test]
        fn addition_is_exact_or_reports_passing_the_cap(a in 0i64..=MAX, b in 0i64..=MAX) {
            let sum = Amount::new(a).unwrap().checked_add(Amount::new(b).unwrap());
            if a + b <= MAX {
                prop_assert_eq!(sum.map(Amount::get), Some(a + b));
            } else {
                prop_assert_eq!(sum, None);
            }
        }

        #[test]
        fn multiplication_is_exact_or_reports_passing_the_cap(a in 0i64..=MAX, q in 0u32..=u32::MAX) {
            let product = Amount::new(a).unwrap().checked_mul(q);
            let exact = i128::from(a) * i128::from(q);
            if exact <= i128::from(MAX) {
                prop_assert_eq!(product.map(|p| i128::from(p.get())), Some(exact));
            } else {
                prop_assert_eq!(product, None);
            }
        }

        #[test]
        fn an_amount_beyond_the_cap_cannot_exist(a in MAX + 1..=i64::MAX) {
            prop_assert!(Amount::new(a).is_err());
            prop_assert!(Amount::positive(a).is_err());
            prop_assert!(serde_json::from_str::<Amount>(&a.to_string()).is_err());
        }

        #[test]
        fn amounts_never_go_negative(a in 0i64..1_000_000_000, b in 0i64..1_000_000_000) {
            let diff = Amount::new(a).unwrap().checked_sub(Amount::new(b).unwrap());
            prop_assert_eq!(diff.is_some(), a >= b);
            if let Some(d) = diff { prop_assert!(d.get() >= 0); }
        }
    }
}

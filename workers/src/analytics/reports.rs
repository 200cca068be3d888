//! What the analytics API answers, read from the live tables.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

/// The answer of `GET /v1/analytics/sales`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SalesReport {
    pub items: Vec<SalesBucket>,
}

/// One bucket of one currency. Money sums may pass 2^63: they are JSON integers of any
/// size (never strings, never floats).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SalesBucket {
    /// Start of the hour or day.
    pub bucket: DateTime<Utc>,
    pub currency: String,
    pub orders: i64,
    pub gross: i128,
    pub paid: i128,
    pub refunded: i128,
}

/// `GET /v1/analytics/sales`: buckets in `[from, to)`, oldest first, of one channel or (with
/// `None`) summed over every channel.
pub async fn sales_report(
    pool: &PgPool,
    channel: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: &str,
) -> Result<SalesReport, sqlx::Error> {
    let rows: Vec<(DateTime<Utc>, String, i64, String, String, String)> = sqlx::query_as(
        "SELECT bucket, currency, sum(orders)::int8, sum(gross)::text, sum(paid)::text,
                sum(refunded)::text
           FROM analytics.sales
          WHERE granularity = $1 AND bucket >= $2 AND bucket < $3
            AND ($4::text IS NULL OR channel = $4)
          GROUP BY bucket, currency
          ORDER BY bucket, currency",
    )
    .bind(granularity)
    .bind(from)
    .bind(to)
    .bind(channel)
    .fetch_all(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(|(bucket, currency, orders, gross, paid, refunded)| {
            Ok(SalesBucket {
                bucket,
                currency,
                orders,
                gross: numeric(&gross)?,
                paid: numeric(&paid)?,
                refunded: numeric(&refunded)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(SalesReport { items })
}

/// A whole `numeric` read as text (sqlx decodes `numeric` only with a decimal crate).
fn numeric(text: &str) -> Result<i128, sqlx::Error> {
    text.parse()
        .map_err(|e| sqlx::Error::Decode(format!("`{text}` is not a whole number: {e}").into()))
}

/// The answer of `GET /v1/analytics/funnel`: orders reaching each stage, and two rates.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Funnel {
    pub placed: i64,
    pub confirmed: i64,
    pub paid: i64,
    pub shipped: i64,
    pub delivered: i64,
    pub cancelled: i64,
    pub refunded: i64,
    /// cancelled / placed; 0 when nothing is placed.
    pub cancellation_rate: f64,
    /// refunded / paid; 0 when nothing is paid.
    pub refund_rate: f64,
}

impl Funnel {
    /// Each stage's name and count, in the order an order reaches them.
    pub fn stages(&self) -> [(&'static str, i64); 7] {
        [
            ("placed", self.placed),
            ("confirmed", self.confirmed),
            ("paid", self.paid),
            ("shipped", self.shipped),
            ("delivered", self.delivered),
            ("cancelled", self.cancelled),
            ("refunded", self.refunded),
        ]
    }
}

/// `GET /v1/analytics/funnel`: the [`Funnel`] of one channel or (with `None`) of every
/// channel.
pub async fn funnel(pool: &PgPool, channel: Option<&str>) -> Result<Funnel, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stage, sum(orders)::int8 FROM analytics.funnel
          WHERE $1::text IS NULL OR channel = $1 GROUP BY stage",
    )
    .bind(channel)
    .fetch_all(pool)
    .await?;
    let count = |stage: &str| rows.iter().find(|(s, _)| s == stage).map_or(0, |(_, n)| *n);
    let rate = |part: i64, whole: i64| {
        if whole > 0 {
            part as f64 / whole as f64
        } else {
            0.0
        }
    };
    Ok(Funnel {
        placed: count("placed"),
        confirmed: count("confirmed"),
        paid: count("paid"),
        shipped: count("shipped"),
        delivered: count("delivered"),
        cancelled: count("cancelled"),
        refunded: count("refunded"),
        cancellation_rate: rate(count("cancelled"), count("placed")),
        refund_rate: rate(count("refunded"), count("paid")),
    })
}

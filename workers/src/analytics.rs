//! The analytics worker: sales per hour and day per currency, and the order funnel, in its
//! own schema. Every change is a commutative sum or a set insert, so messages may arrive in
//! any order (redeliveries reorder them) and the result is the same.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use ordo_domain::order::{
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped,
};
use ordo_domain::payment::{PaymentCaptured, PaymentRefunded};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::consumer::{Delivered, HandleError};

fn data<T: DeserializeOwned>(event: &Delivered) -> Result<T, HandleError> {
    serde_json::from_value(event.body.clone())
        .map_err(|e| HandleError::Poison(format!("{} body unreadable: {e}", event.event_type)))
}

async fn stage(tx: &mut PgConnection, order_id: Uuid, stage: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO analytics.order_stages (order_id, stage) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(order_id)
        .bind(stage)
        .execute(tx)
        .await?;
    Ok(())
}

/// Add to the hour and the day bucket of `at`.
async fn sales(
    tx: &mut PgConnection,
    at: DateTime<Utc>,
    currency: &str,
    (orders, gross, paid, refunded): (i64, i64, i64, i64),
) -> Result<(), HandleError> {
    for (granularity, step) in [("hour", TimeDelta::hours(1)), ("day", TimeDelta::days(1))] {
        let bucket = at
            .duration_trunc(step)
            .map_err(|e| HandleError::Poison(format!("time {at} cannot be bucketed: {e}")))?;
        sqlx::query(
            "INSERT INTO analytics.sales (granularity, bucket, currency, orders, gross, paid, refunded)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (granularity, bucket, currency) DO UPDATE SET
                 orders = sales.orders + EXCLUDED.orders, gross = sales.gross + EXCLUDED.gross,
                 paid = sales.paid + EXCLUDED.paid, refunded = sales.refunded + EXCLUDED.refunded",
        )
        .bind(granularity)
        .bind(bucket)
        .bind(currency)
        .bind(orders)
        .bind(gross)
        .bind(paid)
        .bind(refunded)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Apply one event, inside the transaction that also records it as processed.
pub async fn handle(tx: &mut PgConnection, event: &Delivered) -> Result<(), HandleError> {
    match event.event_type.as_str() {
        "order.placed" => {
            let e: OrderPlaced = data(event)?;
            stage(tx, e.order_id, "placed").await?;
            sales(
                tx,
                e.placed_at,
                e.currency.as_str(),
                (1, e.total.get(), 0, 0),
            )
            .await?;
        }
        "order.confirmed" => {
            stage(tx, data::<OrderConfirmed>(event)?.order_id, "confirmed").await?
        }
        "order.shipped" => stage(tx, data::<OrderShipped>(event)?.order_id, "shipped").await?,
        "order.delivered" => {
            stage(tx, data::<OrderDelivered>(event)?.order_id, "delivered").await?
        }
        "order.cancelled" => {
            stage(tx, data::<OrderCancelled>(event)?.order_id, "cancelled").await?
        }
        "payment.captured" => {
            let e: PaymentCaptured = data(event)?;
            stage(tx, e.order_id, "paid").await?;
            sales(
                tx,
                e.captured_at,
                e.currency.as_str(),
                (0, 0, e.amount.get(), 0),
            )
            .await?;
        }
        "payment.refunded" => {
            let e: PaymentRefunded = data(event)?;
            stage(tx, e.order_id, "refunded").await?;
            sales(
                tx,
                e.refunded_at,
                e.currency.as_str(),
                (0, 0, 0, e.amount.get()),
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// `GET /v1/analytics/sales`: buckets in `[from, to)`, oldest first.
pub async fn sales_report(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: &str,
) -> Result<Value, sqlx::Error> {
    let rows: Vec<(DateTime<Utc>, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT bucket, currency, orders, gross, paid, refunded FROM analytics.sales
          WHERE granularity = $1 AND bucket >= $2 AND bucket < $3
          ORDER BY bucket, currency",
    )
    .bind(granularity)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(bucket, currency, orders, gross, paid, refunded)| {
            json!({"bucket": bucket, "currency": currency, "orders": orders, "gross": gross,
                   "paid": paid, "refunded": refunded})
        })
        .collect();
    Ok(json!({ "items": items }))
}

/// `GET /v1/analytics/funnel`: orders reaching each stage, and the cancellation and refund
/// rates (cancelled / placed, refunded / paid; 0 when nothing is placed or paid).
pub async fn funnel(pool: &PgPool) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stage, count(*) FROM analytics.order_stages GROUP BY stage")
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
    Ok(json!({
        "placed": count("placed"),
        "confirmed": count("confirmed"),
        "paid": count("paid"),
        "shipped": count("shipped"),
        "delivered": count("delivered"),
        "cancelled": count("cancelled"),
        "refunded": count("refunded"),
        "cancellation_rate": rate(count("cancelled"), count("placed")),
        "refund_rate": rate(count("refunded"), count("paid")),
    }))
}

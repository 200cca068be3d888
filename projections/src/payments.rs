//! The payments read model: one row per payment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_domain::payment::{PaymentEvent, PaymentStatus};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::model::{ApplyError, Decoded, DomainEvent};

pub const TABLES: &[&str] = &["payments"];

#[derive(Debug, Clone)]
struct PaymentRow {
    id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    /// The payment's sales channel (its stream's); never changes.
    channel: String,
    status: PaymentStatus,
    currency: String,
    amount: i64,
    authorized: i64,
    captured: i64,
    refunded: i64,
    method: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

pub async fn apply(
    conn: &mut PgConnection,
    schema: &str,
    events: &[Decoded],
) -> Result<(), ApplyError> {
    let mut decoded = Vec::new();
    for item in events
        .iter()
        .filter(|e| e.envelope.aggregate_type == "payment")
    {
        let event = &item.envelope;
        if let Some(error) = item.undecodable() {
            return Err(error);
        }
        let DomainEvent::Payment(payment) = &item.event else {
            continue;
        };
        let id = Uuid::parse_str(&event.aggregate_id)
            .map_err(|_| ApplyError::inconsistent(event, "aggregate id is not a uuid"))?;
        decoded.push((event, id, payment));
    }
    if decoded.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = decoded.iter().map(|(_, id, _)| *id).collect();
    let mut rows = load(conn, schema, &ids).await?;
    let mut touched = Vec::new();
    for (event, id, e) in decoded {
        if let PaymentEvent::Created(c) = e {
            if rows.get(&id).is_none_or(|r| r.version < event.sequence) {
                rows.insert(
                    id,
                    PaymentRow {
                        id,
                        order_id: c.order_id,
                        customer_id: c.customer_id,
                        channel: event.channel.clone(),
                        status: PaymentStatus::Pending,
                        currency: c.currency.to_string(),
                        amount: c.amount.get(),
                        authorized: 0,
                        captured: 0,
                        refunded: 0,
                        method: c.method.to_string(),
                        created_at: c.created_at,
                        updated_at: c.created_at,
                        version: event.sequence,
                    },
                );
                touched.push(id);
            }
            continue;
        }
        let Some(row) = rows.get_mut(&id) else {
            return Err(ApplyError::inconsistent(
                event,
                "payment event before payment.created",
            ));
        };
        if row.version >= event.sequence {
            continue;
        }
        match e {
            PaymentEvent::Created(_) => {}
            PaymentEvent::Authorized(a) => {
                row.status = PaymentStatus::Authorized;
                row.authorized = a.amount.get();
                row.updated_at = a.authorized_at;
            }
            PaymentEvent::Captured(c) => {
                row.status = PaymentStatus::Captured;
                row.captured = c.captured_total.get();
                row.updated_at = c.captured_at;
            }
            PaymentEvent::Refunded(r) => {
                row.status = if r.fully_refunded {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
                row.refunded = r.refunded_total.get();
                row.updated_at = r.refunded_at;
            }
            PaymentEvent::Voided(v) => {
                row.status = PaymentStatus::Voided;
                row.updated_at = v.voided_at;
            }
            PaymentEvent::Failed(f) => {
                row.status = PaymentStatus::Failed;
                row.updated_at = f.failed_at;
            }
        }
        row.version = event.sequence;
        touched.push(id);
    }
    touched.sort_unstable();
    touched.dedup();
    let rows: Vec<&PaymentRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
    save(conn, schema, &rows).await?;
    Ok(())
}

async fn load(
    conn: &mut PgConnection,
    schema: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, PaymentRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT id, order_id, customer_id, channel, status, currency, amount, authorized, captured,
                refunded, method, created_at, updated_at, version
           FROM {schema}.payments WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok((
                r.try_get("id")?,
                PaymentRow {
                    id: r.try_get("id")?,
                    order_id: r.try_get("order_id")?,
                    customer_id: r.try_get("customer_id")?,
                    channel: r.try_get("channel")?,
                    status: serde_json::from_value(Value::String(status)).unwrap_or_default(),
                    currency: r.try_get("currency")?,
                    amount: r.try_get("amount")?,
                    authorized: r.try_get("authorized")?,
                    captured: r.try_get("captured")?,
                    refunded: r.try_get("refunded")?,
                    method: r.try_get("method")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                    version: r.try_get("version")?,
                },
            ))
        })
        .collect()
}

async fn save(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[&PaymentRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {schema}.payments (id, order_id, customer_id, status, currency, amount,
                authorized, captured, refunded, method, created_at, updated_at, version, channel)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[],
                $11::timestamptz[], $12::timestamptz[], $13::bigint[], $14::text[])
         ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status, authorized = EXCLUDED.authorized,
             captured = EXCLUDED.captured, refunded = EXCLUDED.refunded,
             updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.customer_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.status.as_str().to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.currency.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.authorized).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.captured).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.refunded).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.channel.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

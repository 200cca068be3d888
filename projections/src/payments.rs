//! The payments read model: one row per payment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_domain::payment::{PaymentEvent, PaymentStatus};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::model::{ApplyError, Decoded, DomainEvent};
use ordo_commands::feed::FeedEvent;

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
    let selected = select(events)?;
    if selected.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = selected.iter().map(|(_, id, _)| *id).collect();
    let mut rows = load(conn, schema, &ids).await?;
    let touched = fold(selected, &mut rows)?;
    let rows: Vec<&PaymentRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
    save(conn, schema, &rows).await?;
    Ok(())
}

/// A payment event of the batch, with its envelope and its payment's id.
type Selected<'a> = (&'a FeedEvent, Uuid, &'a PaymentEvent);

/// The batch's payment events.
fn select(events: &[Decoded]) -> Result<Vec<Selected<'_>>, ApplyError> {
    let mut selected = Vec::new();
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
        selected.push((event, id, payment));
    }
    Ok(selected)
}

/// Apply the batch to the rows in memory (those it touches, as loaded); returns the ids of
/// the rows it changed, sorted.
fn fold(
    selected: Vec<Selected<'_>>,
    rows: &mut HashMap<Uuid, PaymentRow>,
) -> Result<Vec<Uuid>, ApplyError> {
    let mut touched = Vec::new();
    for (event, id, e) in selected {
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
    Ok(touched)
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

#[cfg(test)]
mod tests {
    use ordo_domain::payment::PaymentCommand;

    use super::*;
    use crate::fixtures::{at, line, text, Log};

    const ORDER: Uuid = Uuid::from_u128(1);
    const CUSTOMER: Uuid = Uuid::from_u128(2);
    const PAYMENT: Uuid = Uuid::from_u128(3);

    /// Fold a batch over the stored rows and store the ones it changed.
    fn apply(rows: &mut HashMap<Uuid, PaymentRow>, batch: &[Decoded]) -> Result<(), ApplyError> {
        let mut loaded = rows.clone();
        for id in fold(select(batch)?, &mut loaded)? {
            rows.insert(id, loaded[&id].clone());
        }
        Ok(())
    }

    /// An order of 30.00 with a pending card payment for all of it, in `channel`.
    fn created(channel: &str) -> Log {
        let mut log = Log::new(channel);
        log.place(ORDER, CUSTOMER, vec![line("A-1", 3, 1000)], 0);
        log.pay(PAYMENT, ORDER, 3000, 1);
        log
    }

    #[test]
    fn a_payment_folds_from_created_through_captured_to_refunded() {
        let mut log = created("pos");
        let mut rows = HashMap::new();
        apply(&mut rows, &log.batch()).unwrap();
        let row = &rows[&PAYMENT];
        assert_eq!(row.status, PaymentStatus::Pending);
        assert_eq!((row.order_id, row.customer_id), (ORDER, CUSTOMER));
        assert_eq!(
            (row.amount, row.currency.as_str(), row.method.as_str()),
            (3000, "EUR", "card")
        );
        assert_eq!((row.created_at, row.updated_at), (at(1), at(1)));
        assert_eq!(row.channel, "pos");

        log.authorize(PAYMENT, 2);
        apply(&mut rows, &log.batch()).unwrap();
        assert_eq!(rows[&PAYMENT].status, PaymentStatus::Authorized);
        assert_eq!(rows[&PAYMENT].authorized, 3000);

        for (minute, part) in [(3, 1000), (4, 2000)] {
            log.capture(PAYMENT, part, minute);
        }
        apply(&mut rows, &log.batch()).unwrap();
        let row = &rows[&PAYMENT];
        assert_eq!(row.status, PaymentStatus::Captured);
        assert_eq!(
            row.captured, 3000,
            "the captured total, not the last capture"
        );
        assert_eq!(row.updated_at, at(4));

        log.refund(PAYMENT, 1000, 5);
        apply(&mut rows, &log.batch()).unwrap();
        assert_eq!(rows[&PAYMENT].status, PaymentStatus::PartiallyRefunded);
        assert_eq!(rows[&PAYMENT].refunded, 1000);
        log.refund(PAYMENT, 2000, 6);
        apply(&mut rows, &log.batch()).unwrap();
        let row = &rows[&PAYMENT];
        assert_eq!(row.status, PaymentStatus::Refunded);
        assert_eq!((row.refunded, row.captured), (3000, 3000));
        assert_eq!((row.version, row.channel.as_str()), (6, "pos"));
    }

    #[test]
    fn a_failed_payment_and_a_voided_one_keep_what_they_had() {
        let mut log = created("default");
        log.payment(
            PAYMENT,
            PaymentCommand::Fail {
                reason: text("card declined"),
                at: at(2),
            },
        );
        let other = Uuid::from_u128(4);
        log.pay(other, ORDER, 3000, 3);
        log.authorize(other, 4);
        log.payment(other, PaymentCommand::Void { at: at(5) });
        let mut rows = HashMap::new();
        apply(&mut rows, &log.batch()).unwrap();
        let failed = &rows[&PAYMENT];
        assert_eq!(failed.status, PaymentStatus::Failed);
        assert_eq!((failed.authorized, failed.updated_at), (0, at(2)));
        let voided = &rows[&other];
        assert_eq!(voided.status, PaymentStatus::Voided);
        assert_eq!((voided.authorized, voided.updated_at), (3000, at(5)));
    }

    #[test]
    fn events_already_folded_change_nothing_when_the_batch_comes_again() {
        let mut log = created("default");
        let first = log.batch();
        let mut rows = HashMap::new();
        apply(&mut rows, &first).unwrap();
        log.authorize(PAYMENT, 2);
        apply(&mut rows, &log.batch()).unwrap();
        apply(&mut rows, &first).unwrap();
        assert_eq!(rows[&PAYMENT].status, PaymentStatus::Authorized);
        assert_eq!(rows[&PAYMENT].version, 2);
    }

    #[test]
    fn a_payment_event_before_its_creation_is_inconsistent() {
        let mut log = created("default");
        log.authorize(PAYMENT, 2);
        let batch = log.batch();
        // Order placed (1), payment created (2), authorized (3).
        let error = apply(&mut HashMap::new(), &batch[2..]).unwrap_err();
        assert!(
            matches!(error, ApplyError::Inconsistent { position: 3, .. }),
            "{error:?}"
        );
    }
}

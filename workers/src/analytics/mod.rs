//! The analytics worker: sales per hour and day per currency and sales channel, and the
//! order funnel (each order's stages, with its channel), in its own schema. Every change is
//! a commutative sum or a set insert, so messages may arrive in any order (redeliveries
//! reorder them) and the result is the same.
//!
//! Being a pure function of events, it is also recomputed from the whole log on the bulk
//! path ([`rebuild`]); the live consumer then counts only what the recompute did not.

mod rebuild;
mod reports;

pub use rebuild::{rebuild, Progress, RebuildError, Rebuilt};
pub use reports::{funnel, sales_report, Funnel, SalesBucket, SalesReport};

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use ordo_domain::order::{
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped,
};
use ordo_domain::payment::{PaymentCaptured, PaymentRefunded};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::jetstream::{Delivered, HandleError, Policy};
use ordo_domain::event::types;

pub const NAME: &str = "analytics";

/// The analytics worker's policy: every effect is a row in its own schema, so a batch's
/// events fold into one write per table, in one transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Analytics;

#[async_trait]
impl Policy for Analytics {
    fn name(&self) -> &'static str {
        NAME
    }

    fn processed_table(&self) -> &'static str {
        "analytics.processed"
    }

    fn check(&self, event: &Delivered) -> Result<(), HandleError> {
        Effects::of(event).map(|_| ())
    }

    async fn handle(
        &self,
        _: &PgPool,
        tx: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError> {
        // Under a shared lock on the rebuild row: a recompute's swap waits for this batch,
        // and this batch for the swap (ADR 0021).
        let counted_through = rebuild::counted_through(tx).await?;
        let mut effects = Effects::default();
        for event in events {
            // Never recomputed (0): everything counts, as before recomputes existed, even
            // a message without a position (none the relay publishes).
            if counted_through > 0 && event.position <= counted_through {
                continue;
            }
            effects.absorb(&Effects::of(event)?)?;
        }
        effects.write(tx, rebuild::LIVE).await?;
        Ok(())
    }
}

/// Sums added to one sales row. Money in `i128` (`numeric` in the table): a bucket sums
/// any number of amounts of up to `Amount::MAX` each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    orders: i64,
    gross: i128,
    paid: i128,
    refunded: i128,
}

impl Totals {
    /// Add `other`, checked: an overflow is poison, never a wrap.
    fn add(&mut self, other: &Totals) -> Result<(), HandleError> {
        let overflow = || HandleError::Poison("a sales sum overflows".into());
        self.orders = self.orders.checked_add(other.orders).ok_or_else(overflow)?;
        self.gross = self.gross.checked_add(other.gross).ok_or_else(overflow)?;
        self.paid = self.paid.checked_add(other.paid).ok_or_else(overflow)?;
        self.refunded = self
            .refunded
            .checked_add(other.refunded)
            .ok_or_else(overflow)?;
        Ok(())
    }
}

/// What events change in the analytics tables, folded in memory: the funnel stages reached
/// and the sums per sales row. Both are commutative, so the events of a batch fold in any
/// order into the same writes. Ordered maps make every transaction lock rows in the same
/// order, so two analytics workers never deadlock on a shared bucket.
#[derive(Debug, Default, PartialEq, Eq)]
struct Effects {
    /// (order, stage, channel).
    stages: BTreeSet<(Uuid, &'static str, String)>,
    /// (granularity, bucket, currency, channel).
    sales: BTreeMap<(&'static str, DateTime<Utc>, String, String), Totals>,
}

impl Effects {
    /// The event types that change anything (a recompute reads only their payloads).
    const EVENT_TYPES: &'static [&'static str] = &[
        types::ORDER_PLACED,
        types::ORDER_CONFIRMED,
        types::ORDER_SHIPPED,
        types::ORDER_DELIVERED,
        types::ORDER_CANCELLED,
        types::PAYMENT_CAPTURED,
        types::PAYMENT_REFUNDED,
    ];

    /// What one event changes. Fails (poison) on a body that does not read or a time that
    /// cannot be bucketed; events of other types change nothing.
    fn of(event: &Delivered) -> Result<Self, HandleError> {
        let mut effects = Self::default();
        let ch = &event.channel;
        match event.event_type.as_str() {
            types::ORDER_PLACED => {
                let e: OrderPlaced = event.data()?;
                effects.stages.insert((e.order_id, "placed", ch.clone()));
                let totals = Totals {
                    orders: 1,
                    gross: e.total.get().into(),
                    ..Totals::default()
                };
                effects.add_sales(e.placed_at, e.currency.as_str(), ch, totals)?;
            }
            types::ORDER_CONFIRMED => {
                effects.stages.insert((
                    event.data::<OrderConfirmed>()?.order_id,
                    "confirmed",
                    ch.clone(),
                ));
            }
            types::ORDER_SHIPPED => {
                effects.stages.insert((
                    event.data::<OrderShipped>()?.order_id,
                    "shipped",
                    ch.clone(),
                ));
            }
            types::ORDER_DELIVERED => {
                effects.stages.insert((
                    event.data::<OrderDelivered>()?.order_id,
                    "delivered",
                    ch.clone(),
                ));
            }
            types::ORDER_CANCELLED => {
                effects.stages.insert((
                    event.data::<OrderCancelled>()?.order_id,
                    "cancelled",
                    ch.clone(),
                ));
            }
            types::PAYMENT_CAPTURED => {
                let e: PaymentCaptured = event.data()?;
                effects.stages.insert((e.order_id, "paid", ch.clone()));
                let totals = Totals {
                    paid: e.amount.get().into(),
                    ..Totals::default()
                };
                effects.add_sales(e.captured_at, e.currency.as_str(), ch, totals)?;
            }
            types::PAYMENT_REFUNDED => {
                let e: PaymentRefunded = event.data()?;
                effects.stages.insert((e.order_id, "refunded", ch.clone()));
                let totals = Totals {
                    refunded: e.amount.get().into(),
                    ..Totals::default()
                };
                effects.add_sales(e.refunded_at, e.currency.as_str(), ch, totals)?;
            }
            _ => {}
        }
        Ok(effects)
    }

    /// Add to the hour and the day bucket of `at`.
    fn add_sales(
        &mut self,
        at: DateTime<Utc>,
        currency: &str,
        channel: &str,
        totals: Totals,
    ) -> Result<(), HandleError> {
        for (granularity, step) in [("hour", TimeDelta::hours(1)), ("day", TimeDelta::days(1))] {
            let bucket = at
                .duration_trunc(step)
                .map_err(|e| HandleError::Poison(format!("time {at} cannot be bucketed: {e}")))?;
            self.sales
                .entry((granularity, bucket, currency.to_owned(), channel.to_owned()))
                .or_default()
                .add(&totals)?;
        }
        Ok(())
    }

    /// Fold another event's effects into these.
    fn absorb(&mut self, other: &Effects) -> Result<(), HandleError> {
        self.stages.extend(other.stages.iter().cloned());
        for (key, totals) in &other.sales {
            self.sales.entry(key.clone()).or_default().add(totals)?;
        }
        Ok(())
    }

    /// Write them into the tables in `schema` (the live ones, or a recompute's shadow):
    /// one statement for the stages and the funnel, one for the sales, however many events
    /// were folded in.
    async fn write(&self, tx: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        if !self.stages.is_empty() {
            let mut columns: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
            for (order, stage, channel) in &self.stages {
                columns.0.push(*order);
                columns.1.push(stage);
                columns.2.push(channel);
            }
            // The funnel counts only the stages this statement added: a repeat adds none. Its
            // rows are locked in one order, so that two batches cannot wait on each other.
            sqlx::query(&format!(
                "WITH recorded AS (
                     INSERT INTO {schema}.order_stages (order_id, stage, channel)
                     SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[])
                     ON CONFLICT DO NOTHING
                     RETURNING channel, stage)
                 INSERT INTO {schema}.funnel AS f (channel, stage, orders)
                 SELECT channel, stage, count(*) FROM recorded
                  GROUP BY channel, stage ORDER BY channel, stage
                 ON CONFLICT (channel, stage) DO UPDATE SET orders = f.orders + EXCLUDED.orders"
            ))
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .execute(&mut *tx)
            .await?;
        }
        if !self.sales.is_empty() {
            // granularity, bucket, currency, channel
            type Keys<'a> = (Vec<&'a str>, Vec<DateTime<Utc>>, Vec<&'a str>, Vec<&'a str>);
            let mut columns: Keys = Default::default();
            let mut sums: (Vec<i64>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
            for ((granularity, bucket, currency, channel), t) in &self.sales {
                columns.0.push(granularity);
                columns.1.push(*bucket);
                columns.2.push(currency);
                columns.3.push(channel);
                sums.0.push(t.orders);
                sums.1.push(t.gross.to_string());
                sums.2.push(t.paid.to_string());
                sums.3.push(t.refunded.to_string());
            }
            sqlx::query(&format!(
                "INSERT INTO {schema}.sales (granularity, bucket, currency, orders, gross, paid, refunded, channel)
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[],
                                      $4::int8[], $5::text[]::numeric[], $6::text[]::numeric[],
                                      $7::text[]::numeric[], $8::text[])
                 ON CONFLICT (granularity, bucket, currency, channel) DO UPDATE SET
                     orders = sales.orders + EXCLUDED.orders, gross = sales.gross + EXCLUDED.gross,
                     paid = sales.paid + EXCLUDED.paid, refunded = sales.refunded + EXCLUDED.refunded"
            ))
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(sums.0)
            .bind(sums.1)
            .bind(sums.2)
            .bind(sums.3)
            .bind(columns.3)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn captured(order_id: Uuid, amount: i64, at: &str) -> Delivered {
        Delivered {
            event_id: Uuid::new_v4(),
            event_type: "payment.captured".into(),
            aggregate_id: String::new(),
            position: 0,
            body: json!({"payment_id": Uuid::new_v4(), "order_id": order_id, "currency": "EUR",
                         "amount": amount, "captured_total": amount, "captured_at": at})
            .into(),
            traceparent: None,
            channel: "default".into(),
        }
    }

    #[test]
    fn a_batch_folds_into_one_row_per_bucket_and_one_stage_per_order() {
        let order = Uuid::new_v4();
        let mut batch = Effects::default();
        for event in [
            captured(order, 100, "2026-11-21T10:05:00Z"),
            captured(order, 20, "2026-11-21T10:55:00Z"),
            captured(Uuid::new_v4(), 3, "2026-11-21T11:00:00Z"),
        ] {
            batch.absorb(&Effects::of(&event).unwrap()).unwrap();
        }
        assert_eq!(batch.stages.len(), 2);
        let paid = |granularity: &'static str, bucket: &str| {
            let bucket = DateTime::parse_from_rfc3339(bucket).unwrap().to_utc();
            batch.sales[&(granularity, bucket, "EUR".to_owned(), "default".to_owned())].paid
        };
        assert_eq!(paid("hour", "2026-11-21T10:00:00Z"), 120);
        assert_eq!(paid("hour", "2026-11-21T11:00:00Z"), 3);
        assert_eq!(paid("day", "2026-11-21T00:00:00Z"), 123);
        assert_eq!(batch.sales.len(), 3);
    }

    #[test]
    fn an_unreadable_body_is_poison() {
        let mut event = captured(Uuid::new_v4(), 1, "2026-11-21T10:05:00Z");
        event.body = json!({"not": "a capture"}).into();
        assert!(matches!(Effects::of(&event), Err(HandleError::Poison(_))));
    }
}

//! The orders read model: one row per order, plus what each payment contributes to the
//! order's payment status.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ordo_domain::order::OrderEvent;
use ordo_domain::payment::{order_payment_status, Payment, PaymentEvent, PaymentStatus};
use ordo_domain::Amount;
use serde_json::{json, Value};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::model::{ApplyError, Decoded, DomainEvent};
use ordo_commands::feed::FeedEvent;

pub const TABLES: &[&str] = &["orders", "order_payments"];

#[derive(Debug, Clone)]
struct OrderRow {
    id: Uuid,
    customer_id: Uuid,
    /// The order's sales channel (its stream's); never changes.
    channel: String,
    status: String,
    payment_status: String,
    fulfillment_status: String,
    currency: String,
    total: i64,
    lines: Value,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    /// The stored lines, unparsed until a shipment needs them.
    lines_json: Option<String>,
    line_count: i32,
    /// Whether `lines` must be written (placed or shipped in this batch); most events
    /// leave them alone, and not sending them saves the database re-parsing the JSON.
    lines_changed: bool,
}

#[derive(Debug, Clone)]
struct PaymentRow {
    payment_id: Uuid,
    order_id: Uuid,
    status: PaymentStatus,
    authorized: i64,
    captured: i64,
    refunded: i64,
    version: i64,
}

fn uuid_of(event: &FeedEvent) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(&event.aggregate_id)
        .map_err(|_| ApplyError::inconsistent(event, "aggregate id is not a uuid"))
}

enum Event<'a> {
    Order(&'a OrderEvent),
    Payment(&'a PaymentEvent),
}

/// An event of the batch, decoded, with what the fold needs of its envelope.
struct Item<'a> {
    id: Uuid,
    sequence: i64,
    position: i64,
    recorded_at: DateTime<Utc>,
    channel: &'a str,
    event: Event<'a>,
}

impl Item<'_> {
    fn inconsistent(&self, reason: &str) -> ApplyError {
        ApplyError::Inconsistent {
            position: self.position,
            reason: reason.into(),
        }
    }
}

/// A batch decoded: its items, and the orders and payments they touch.
struct Batch<'a> {
    items: Vec<Item<'a>>,
    order_ids: Vec<Uuid>,
}

/// The batch's order and payment events.
fn select(events: &[Decoded]) -> Result<Batch<'_>, ApplyError> {
    let mut items = Vec::with_capacity(events.len());
    let mut order_ids = HashSet::new();
    for decoded in events {
        let event = &decoded.envelope;
        if !matches!(event.aggregate_type.as_str(), "order" | "payment") {
            continue;
        }
        if let Some(error) = decoded.undecodable() {
            return Err(error);
        }
        let selected = match &decoded.event {
            DomainEvent::Order(e) => {
                order_ids.insert(uuid_of(event)?);
                Event::Order(e)
            }
            DomainEvent::Payment(e) => {
                order_ids.insert(e.order_id());
                Event::Payment(e)
            }
            _ => continue,
        };
        items.push(Item {
            id: uuid_of(event)?,
            sequence: event.sequence,
            position: event.checkpoint.global_position,
            recorded_at: event.recorded_at,
            channel: &event.channel,
            event: selected,
        });
    }
    Ok(Batch {
        items,
        order_ids: order_ids.into_iter().collect(),
    })
}

pub async fn apply(
    conn: &mut PgConnection,
    schema: &str,
    events: &[Decoded],
) -> Result<(), ApplyError> {
    let Batch { items, order_ids } = select(events)?;
    if items.is_empty() {
        return Ok(());
    }
    let orders = load_orders(conn, schema, &order_ids).await?;
    let payments = load_payments(conn, schema, &order_ids).await?;
    let (orders, payments) = fold(items, orders, payments)?;
    save_orders(conn, schema, &orders).await?;
    save_payments(conn, schema, &payments).await?;
    Ok(())
}

/// Apply the batch in memory; returns the rows it changed.
fn fold(
    items: Vec<Item<'_>>,
    mut orders: HashMap<Uuid, OrderRow>,
    mut payments: HashMap<Uuid, PaymentRow>,
) -> Result<(Vec<OrderRow>, Vec<PaymentRow>), ApplyError> {
    let mut touched_orders = HashSet::new();
    let mut touched_payments = HashSet::new();

    for item in items {
        let id = item.id;
        match item.event {
            Event::Order(e) => {
                if let OrderEvent::Placed(p) = e {
                    if orders.get(&id).is_none_or(|o| o.version < item.sequence) {
                        let lines: Vec<Value> = p
                            .lines
                            .iter()
                            .map(|l| json!({"sku": l.sku, "name": l.name, "quantity": l.quantity,
                                            "unit_price": l.unit_price, "line_total": l.line_total, "shipped": 0}))
                            .collect();
                        orders.insert(
                            id,
                            OrderRow {
                                id,
                                customer_id: p.customer_id,
                                channel: item.channel.to_owned(),
                                status: "placed".into(),
                                payment_status: "unpaid".into(),
                                fulfillment_status: "unfulfilled".into(),
                                currency: p.currency.to_string(),
                                total: p.total.get(),
                                lines: Value::Array(lines),
                                placed_at: p.placed_at,
                                updated_at: p.placed_at,
                                version: item.sequence,
                                lines_changed: true,
                                lines_json: None,
                                line_count: p.lines.len() as i32,
                            },
                        );
                        touched_orders.insert(id);
                    }
                    continue;
                }
                let Some(order) = orders.get_mut(&id) else {
                    return Err(item.inconsistent("order event before order.placed"));
                };
                if order.version >= item.sequence {
                    continue;
                }
                apply_order(order, e);
                order.version = item.sequence;
                touched_orders.insert(id);
            }
            Event::Payment(e) => {
                if let PaymentEvent::Created(c) = e {
                    if payments.get(&id).is_none_or(|p| p.version < item.sequence) {
                        payments.insert(
                            id,
                            PaymentRow {
                                payment_id: id,
                                order_id: c.order_id,
                                status: PaymentStatus::Pending,
                                authorized: 0,
                                captured: 0,
                                refunded: 0,
                                version: item.sequence,
                            },
                        );
                        touched_payments.insert(id);
                    }
                    continue;
                }
                let Some(payment) = payments.get_mut(&id) else {
                    return Err(item.inconsistent("payment event before payment.created"));
                };
                if payment.version >= item.sequence {
                    continue;
                }
                match e {
                    PaymentEvent::Created(_) => {}
                    PaymentEvent::Authorized(a) => {
                        payment.status = PaymentStatus::Authorized;
                        payment.authorized = a.amount.get();
                    }
                    PaymentEvent::Captured(c) => {
                        payment.status = PaymentStatus::Captured;
                        payment.captured = c.captured_total.get();
                    }
                    PaymentEvent::Refunded(r) => {
                        payment.status = if r.fully_refunded {
                            PaymentStatus::Refunded
                        } else {
                            PaymentStatus::PartiallyRefunded
                        };
                        payment.refunded = r.refunded_total.get();
                    }
                    PaymentEvent::Voided(_) => payment.status = PaymentStatus::Voided,
                    PaymentEvent::Failed(_) => payment.status = PaymentStatus::Failed,
                }
                payment.version = item.sequence;
                touched_payments.insert(id);
                if let Some(order) = orders.get_mut(&payment.order_id) {
                    order.updated_at = item.recorded_at.max(order.updated_at);
                    touched_orders.insert(payment.order_id);
                }
            }
        }
    }

    // Payment status from every payment of each touched order (grouped once: a bulk batch
    // touches many orders).
    let mut by_order: HashMap<Uuid, Vec<&PaymentRow>> = HashMap::new();
    for p in payments.values() {
        if touched_orders.contains(&p.order_id) {
            by_order.entry(p.order_id).or_default().push(p);
        }
    }
    for order_id in &touched_orders {
        if let Some(order) = orders.get_mut(order_id) {
            let of_order: Vec<Payment> = by_order
                .get(order_id)
                .into_iter()
                .flatten()
                .map(|p| Payment {
                    status: p.status,
                    authorized: Amount::new(p.authorized).unwrap_or_default(),
                    captured: Amount::new(p.captured).unwrap_or_default(),
                    refunded: Amount::new(p.refunded).unwrap_or_default(),
                    ..Payment::default()
                })
                .collect();
            let total = Amount::new(order.total).unwrap_or_default();
            order.payment_status = order_payment_status(total, &of_order).as_str().to_owned();
        }
    }
    let orders = touched_orders
        .iter()
        .filter_map(|id| orders.remove(id))
        .collect();
    let payments = touched_payments
        .iter()
        .filter_map(|id| payments.remove(id))
        .collect();
    Ok((orders, payments))
}

fn apply_order(order: &mut OrderRow, event: &OrderEvent) {
    match event {
        OrderEvent::Placed(_) => {}
        OrderEvent::Confirmed(e) => {
            order.status = "confirmed".into();
            order.updated_at = e.confirmed_at;
        }
        OrderEvent::Cancelled(e) => {
            order.status = "cancelled".into();
            order.updated_at = e.cancelled_at;
        }
        OrderEvent::Shipped(e) => {
            if !order.lines_changed {
                order.lines = order
                    .lines_json
                    .as_deref()
                    .and_then(|raw| serde_json::from_str(raw).ok())
                    .unwrap_or(Value::Array(Vec::new()));
            }
            order.lines_changed = true;
            order.status = "shipped".into();
            order.fulfillment_status = if e.fully_shipped {
                "shipped".into()
            } else {
                "partially_shipped".into()
            };
            if let Some(lines) = order.lines.as_array_mut() {
                for shipped in &e.lines {
                    if let Some(line) = lines.iter_mut().find(|l| l["sku"] == shipped.sku.as_str())
                    {
                        let before = line["shipped"].as_u64().unwrap_or(0);
                        line["shipped"] = json!(before + u64::from(shipped.quantity.get()));
                    }
                }
            }
            order.updated_at = e.shipped_at;
        }
        OrderEvent::Delivered(e) => {
            order.status = "delivered".into();
            order.fulfillment_status = "delivered".into();
            order.updated_at = e.delivered_at;
        }
        // The view derives the payment status from the payment events themselves, which it
        // sees first (ADR 0003); the order's own record only moves its version.
        OrderEvent::PaymentStatusChanged(_) => {}
    }
}

async fn load_orders(
    conn: &mut PgConnection,
    schema: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, OrderRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT id, customer_id, channel, status, payment_status, fulfillment_status, currency,
                total, lines::text AS lines, line_count, placed_at, updated_at, version
           FROM {schema}.orders WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                OrderRow {
                    id: r.try_get("id")?,
                    customer_id: r.try_get("customer_id")?,
                    channel: r.try_get("channel")?,
                    status: r.try_get("status")?,
                    payment_status: r.try_get("payment_status")?,
                    fulfillment_status: r.try_get("fulfillment_status")?,
                    currency: r.try_get("currency")?,
                    total: r.try_get("total")?,
                    lines: Value::Null,
                    lines_json: r.try_get("lines")?,
                    placed_at: r.try_get("placed_at")?,
                    updated_at: r.try_get("updated_at")?,
                    version: r.try_get("version")?,
                    lines_changed: false,
                    line_count: r.try_get("line_count")?,
                },
            ))
        })
        .collect()
}

/// Every payment of the given orders (each payment event names its order, so this holds
/// every payment the batch touches).
async fn load_payments(
    conn: &mut PgConnection,
    schema: &str,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, PaymentRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT payment_id, order_id, status, authorized, captured, refunded, version
           FROM {schema}.order_payments WHERE order_id = ANY($1)"
    ))
    .bind(order_ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok((
                r.try_get("payment_id")?,
                PaymentRow {
                    payment_id: r.try_get("payment_id")?,
                    order_id: r.try_get("order_id")?,
                    status: serde_json::from_value(Value::String(status)).unwrap_or_default(),
                    authorized: r.try_get("authorized")?,
                    captured: r.try_get("captured")?,
                    refunded: r.try_get("refunded")?,
                    version: r.try_get("version")?,
                },
            ))
        })
        .collect()
}

async fn save_orders(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[OrderRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let line_counts: Vec<i32> = rows.iter().map(|r| r.line_count).collect();
    sqlx::query(&format!(
        "INSERT INTO {schema}.orders (id, customer_id, status, payment_status, fulfillment_status,
                currency, total, line_count, lines, placed_at, updated_at, version, channel)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                $6::text[], $7::bigint[], $8::int[], $9::jsonb[], $10::timestamptz[],
                $11::timestamptz[], $12::bigint[], $13::text[])
         ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status, payment_status = EXCLUDED.payment_status,
             fulfillment_status = EXCLUDED.fulfillment_status,
             lines = coalesce(EXCLUDED.lines, orders.lines),
             updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.customer_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.payment_status.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.fulfillment_status.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.currency.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.total).collect::<Vec<_>>())
    .bind(line_counts)
    .bind(
        rows.iter()
            .map(|r| r.lines_changed.then(|| r.lines.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.placed_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.channel.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

async fn save_payments(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[PaymentRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {schema}.order_payments (payment_id, order_id, status, authorized, captured, refunded, version)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
         ON CONFLICT (payment_id) DO UPDATE SET
             status = EXCLUDED.status, authorized = EXCLUDED.authorized,
             captured = EXCLUDED.captured, refunded = EXCLUDED.refunded, version = EXCLUDED.version"
    ))
    .bind(rows.iter().map(|r| r.payment_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str().to_owned()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.authorized).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.captured).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.refunded).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use ordo_domain::order::OrderCommand;

    use super::*;
    use crate::fixtures::{at, line, Log};

    const ORDER: Uuid = Uuid::from_u128(1);
    const CUSTOMER: Uuid = Uuid::from_u128(2);
    const PAYMENT: Uuid = Uuid::from_u128(3);

    /// The two tables, as `apply` would leave them between batches.
    #[derive(Default)]
    struct Tables {
        orders: HashMap<Uuid, OrderRow>,
        payments: HashMap<Uuid, PaymentRow>,
    }

    impl Tables {
        /// Fold a batch over the stored rows and store what it changed, the way `save_*`
        /// and `load_*` round-trip them (the lines come back as text, unparsed).
        fn apply(&mut self, batch: &[Decoded]) -> Result<(), ApplyError> {
            let Batch { items, .. } = select(batch)?;
            let (orders, payments) = fold(items, self.orders.clone(), self.payments.clone())?;
            for mut order in orders {
                if order.lines_changed {
                    order.lines_json = Some(order.lines.to_string());
                }
                order.lines = Value::Null;
                order.lines_changed = false;
                self.orders.insert(order.id, order);
            }
            for payment in payments {
                self.payments.insert(payment.payment_id, payment);
            }
            Ok(())
        }

        fn order(&self) -> &OrderRow {
            &self.orders[&ORDER]
        }

        /// `(sku, shipped)` of each line, as stored.
        fn shipped(&self) -> Vec<(String, u64)> {
            let lines: Value =
                serde_json::from_str(self.order().lines_json.as_deref().unwrap()).unwrap();
            lines
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["sku"].as_str().unwrap().to_owned(),
                        l["shipped"].as_u64().unwrap(),
                    )
                })
                .collect()
        }
    }

    /// A placed order of 2 × A-1 at 10.00 and 1 × B-2 at 5.00 (25.00), in `channel`.
    fn placed(channel: &str) -> Log {
        let mut log = Log::new(channel);
        log.place(
            ORDER,
            CUSTOMER,
            vec![line("A-1", 2, 1000), line("B-2", 1, 500)],
            0,
        );
        log
    }

    fn pay_in_full(log: &mut Log, minute: i64) {
        log.pay(PAYMENT, ORDER, 2500, minute);
        log.authorize(PAYMENT, minute);
        log.capture(PAYMENT, 2500, minute + 1);
    }

    #[test]
    fn an_order_folds_from_placed_through_paid_and_shipped_to_refunded() {
        let mut log = placed("web");
        let mut tables = Tables::default();
        tables.apply(&log.batch()).unwrap();
        let order = tables.order();
        assert_eq!(
            (order.status.as_str(), order.payment_status.as_str()),
            ("placed", "unpaid")
        );
        assert_eq!((order.customer_id, order.total), (CUSTOMER, 2500));
        assert_eq!((order.currency.as_str(), order.line_count), ("EUR", 2));
        assert_eq!(order.fulfillment_status, "unfulfilled");
        assert_eq!(tables.shipped(), [("A-1".into(), 0), ("B-2".into(), 0)]);

        log.order(ORDER, OrderCommand::Confirm { at: at(5) });
        tables.apply(&log.batch()).unwrap();
        assert_eq!(tables.order().status, "confirmed");
        assert_eq!(tables.order().updated_at, at(5));

        pay_in_full(&mut log, 10);
        tables.apply(&log.batch()).unwrap();
        assert_eq!(tables.order().payment_status, "paid");
        assert_eq!(tables.payments[&PAYMENT].captured, 2500);

        log.ship(ORDER, Some(vec![("A-1", 1)]), 20);
        tables.apply(&log.batch()).unwrap();
        let order = tables.order();
        assert_eq!(
            (order.status.as_str(), order.fulfillment_status.as_str()),
            ("shipped", "partially_shipped")
        );
        assert_eq!(tables.shipped(), [("A-1".into(), 1), ("B-2".into(), 0)]);

        log.ship(ORDER, None, 30);
        tables.apply(&log.batch()).unwrap();
        assert_eq!(tables.order().fulfillment_status, "shipped");
        assert_eq!(tables.shipped(), [("A-1".into(), 2), ("B-2".into(), 1)]);
        assert_eq!(tables.order().updated_at, at(30));

        log.refund(PAYMENT, 500, 40);
        tables.apply(&log.batch()).unwrap();
        assert_eq!(tables.order().payment_status, "partially_refunded");
        log.refund(PAYMENT, 2000, 41);
        tables.apply(&log.batch()).unwrap();
        let order = tables.order();
        assert_eq!(order.payment_status, "refunded");
        assert_eq!(
            order.status, "shipped",
            "a refund leaves the lifecycle alone"
        );
        assert_eq!(order.channel, "web", "the channel stays the stream's");
        // Placed, confirmed, shipped twice: the payment events move no order version.
        assert_eq!(order.version, 4);
    }

    #[test]
    fn one_batch_folds_the_same_as_one_event_at_a_time() {
        let mut log = placed("default");
        log.order(ORDER, OrderCommand::Confirm { at: at(5) });
        pay_in_full(&mut log, 10);
        log.ship(ORDER, Some(vec![("B-2", 1)]), 20);
        let batch = log.batch();
        let mut whole = Tables::default();
        whole.apply(&batch).unwrap();
        let mut stepwise = Tables::default();
        for event in batch.chunks(1) {
            stepwise.apply(event).unwrap();
        }
        for tables in [&whole, &stepwise] {
            let order = tables.order();
            assert_eq!(order.payment_status, "paid");
            assert_eq!(order.fulfillment_status, "partially_shipped");
            assert_eq!(tables.shipped(), [("A-1".into(), 0), ("B-2".into(), 1)]);
        }
    }

    #[test]
    fn events_already_folded_change_nothing_when_the_batch_comes_again() {
        let mut log = placed("default");
        log.order(ORDER, OrderCommand::Confirm { at: at(5) });
        let first = log.batch();
        let mut tables = Tables::default();
        tables.apply(&first).unwrap();
        log.ship(ORDER, None, 20);
        tables.apply(&log.batch()).unwrap();

        tables.apply(&first).unwrap();
        let order = tables.order();
        assert_eq!(order.status, "shipped", "order.placed again reset the row");
        assert_eq!(tables.shipped(), [("A-1".into(), 2), ("B-2".into(), 1)]);
        assert_eq!(order.version, 3);
    }

    #[test]
    fn an_authorized_payment_short_of_the_total_leaves_the_order_unpaid() {
        let mut log = placed("default");
        log.pay(PAYMENT, ORDER, 2000, 1);
        log.authorize(PAYMENT, 2);
        let mut tables = Tables::default();
        tables.apply(&log.batch()).unwrap();
        assert_eq!(tables.order().payment_status, "unpaid");
        assert_eq!(tables.payments[&PAYMENT].authorized, 2000);

        log.pay(Uuid::from_u128(4), ORDER, 500, 3);
        log.authorize(Uuid::from_u128(4), 4);
        tables.apply(&log.batch()).unwrap();
        assert_eq!(
            tables.order().payment_status,
            "authorized",
            "two payments together authorize the whole total"
        );
        // The fixtures record the event at position n at minute n: payment events move the
        // order's time to when they were recorded.
        assert_eq!(tables.order().updated_at, at(5));
    }

    #[test]
    fn an_order_event_before_its_placement_is_inconsistent() {
        let mut log = placed("default");
        log.order(ORDER, OrderCommand::Confirm { at: at(5) });
        let batch = log.batch();
        let error = Tables::default().apply(&batch[1..]).unwrap_err();
        assert!(
            matches!(error, ApplyError::Inconsistent { position: 2, .. }),
            "{error:?}"
        );
    }
}

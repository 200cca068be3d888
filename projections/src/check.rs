//! The consistency check: fold the whole log with the domain's own `apply` and compare
//! the result with the read-model tables, field by field. Used by tests and by
//! `ordo projections check`.

use std::collections::{BTreeMap, HashMap};

use ordo_domain::customer::{Customer, CustomerEvent};
use ordo_domain::order::{Order, OrderEvent, OrderStatus};
use ordo_domain::payment::{order_payment_status, Payment, PaymentEvent};
use ordo_domain::personal::Personal;
use serde_json::{json, Value};
use sqlx::PgPool;

use ordo_commands::feed::{self, Checkpoint};

#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub table: &'static str,
    pub id: String,
    pub field: String,
    pub expected: Value,
    pub actual: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] feed::DecodeError),
    /// A customer's spending in one currency passes what i128 holds. The customers read
    /// model refuses such an event (it dead-letters it), so the check says so rather than
    /// comparing a wrapped number.
    #[error("customer {customer}'s {what} in {currency} overflows")]
    Overflow {
        customer: String,
        currency: String,
        what: &'static str,
    },
}

/// `sum + amount`, or the overflow that names where.
fn add_spend(
    sum: i128,
    amount: i64,
    (customer, currency): &(String, String),
    what: &'static str,
) -> Result<i128, CheckError> {
    sum.checked_add(i128::from(amount))
        .ok_or_else(|| CheckError::Overflow {
            customer: customer.clone(),
            currency: currency.clone(),
            what,
        })
}

/// Every difference between the folded log and the read models. Only meaningful when the
/// projections have caught up with the log.
pub async fn check(pool: &PgPool) -> Result<Vec<Mismatch>, CheckError> {
    check_with_progress(pool, |_| {}).await
}

/// How far a check has read the log: `read` of `total` events (the log's size when the
/// check began; events appended since are read too).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub read: i64,
    pub total: i64,
}

/// [`check`], calling `progress` after every batch of the log it folds.
pub async fn check_with_progress(
    pool: &PgPool,
    mut progress: impl FnMut(Progress),
) -> Result<Vec<Mismatch>, CheckError> {
    let mut orders: BTreeMap<String, (Order, i64)> = BTreeMap::new();
    let mut payments: BTreeMap<String, (Payment, i64)> = BTreeMap::new();
    let mut customers: BTreeMap<String, Customer> = BTreeMap::new();
    let mut after = Checkpoint::default();
    let mut conn = pool.acquire().await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&mut *conn)
        .await?;
    let mut read = 0_i64;
    progress(Progress { read, total });
    // Without master keys: an erased customer's fields are withheld, sealed ones stay sealed
    // (and are not compared).
    let keys = ordo_commands::privacy::Keyring::new(pool.clone(), None);
    loop {
        let mut batch = feed::read_batch(&mut conn, after, 10_000).await?;
        keys.open_feed_on(&mut conn, &mut batch).await?;
        let Some(last) = batch.last() else { break };
        after = last.checkpoint;
        read += batch.len() as i64;
        progress(Progress {
            read,
            total: total.max(read),
        });
        for e in &batch {
            match e.aggregate_type.as_str() {
                "order" => {
                    let entry = orders.entry(e.aggregate_id.clone()).or_default();
                    entry.0.apply(e.decode::<OrderEvent>()?);
                    entry.1 = e.sequence;
                }
                "payment" => {
                    let entry = payments.entry(e.aggregate_id.clone()).or_default();
                    entry.0.apply(e.decode::<PaymentEvent>()?);
                    entry.1 = e.sequence;
                }
                "customer" => customers
                    .entry(e.aggregate_id.clone())
                    .or_default()
                    .apply(e.decode::<CustomerEvent>()?),
                _ => {}
            }
        }
    }

    // Grouped once: a scan of every payment per order (every order per customer) made the
    // check quadratic in the size of the log.
    let mut payments_of: HashMap<String, Vec<&Payment>> = HashMap::new();
    for (p, _) in payments.values() {
        if let Some(order) = p.order_id {
            payments_of.entry(order.to_string()).or_default().push(p);
        }
    }
    let mut orders_of: HashMap<String, Vec<&Order>> = HashMap::new();
    for (o, _) in orders.values() {
        if let Some(customer) = o.customer_id {
            orders_of.entry(customer.to_string()).or_default().push(o);
        }
    }

    let mut expected_orders = BTreeMap::new();
    for (id, (order, version)) in &orders {
        let of_order = payments_of.remove(id).unwrap_or_default();
        expected_orders.insert(
            id.clone(),
            json!({
                "customer_id": order.customer_id, "status": order.status.as_str(),
                "payment_status": order_payment_status(order.total, of_order),
                "fulfillment_status": order.fulfillment_status(), "currency": order.currency,
                "total": order.total, "line_count": order.lines.len(), "version": version,
            }),
        );
    }
    let expected_payments: BTreeMap<String, Value> = payments
        .iter()
        .map(|(id, (p, version))| {
            (
                id.clone(),
                json!({
                    "order_id": p.order_id, "customer_id": p.customer_id, "status": p.status.as_str(),
                    "currency": p.currency, "amount": p.amount, "authorized": p.authorized,
                    "captured": p.captured, "refunded": p.refunded, "version": version,
                }),
            )
        })
        .collect();

    // The 360 view, computed from folded states rather than event by event.
    let mut expected_customers: BTreeMap<String, Value> = BTreeMap::new();
    let mut expected_spend: BTreeMap<String, Value> = BTreeMap::new();
    // Money sums in i128, as the read model keeps them; compared as decimal text.
    let mut spend: HashMap<(String, String), (i128, i128, i64)> = HashMap::new();
    for (id, c) in &customers {
        let mine = orders_of.remove(id).unwrap_or_default();
        let placed_times = mine.iter().filter_map(|o| o.placed_at);
        let mut expected = json!({
                "order_count": mine.len(),
                "cancelled_count": mine.iter().filter(|o| o.status == OrderStatus::Cancelled).count(),
                "open_orders": mine.iter().filter(|o| !matches!(o.status, OrderStatus::Cancelled | OrderStatus::Delivered)).count(),
                "notes_count": c.notes.len(),
                "first_order_at": placed_times.clone().min(), "last_order_at": placed_times.max(),
        });
        for (field, value) in [("email", personal(&c.email)), ("name", personal(&c.name))] {
            if let Some(value) = value {
                expected[field] = value;
            }
        }
        expected_customers.insert(id.clone(), expected);
        for o in mine.iter().filter(|o| o.status != OrderStatus::Cancelled) {
            let key = (
                id.clone(),
                o.currency.map(|c| c.to_string()).unwrap_or_default(),
            );
            let s = spend.entry(key.clone()).or_default();
            s.0 = add_spend(s.0, o.total.get(), &key, "gross")?;
            s.2 += 1;
        }
    }
    for (p, _) in payments.values() {
        if let (Some(customer), Some(currency)) = (p.customer_id, p.currency) {
            if !p.refunded.is_zero() {
                let key = (customer.to_string(), currency.to_string());
                let s = spend.entry(key.clone()).or_default();
                s.1 = add_spend(s.1, p.refunded.get(), &key, "refunded")?;
            }
        }
    }
    for ((customer, currency), (gross, refunded, count)) in spend {
        expected_spend.insert(
            format!("{customer}/{currency}"),
            json!({"gross": gross.to_string(), "refunded": refunded.to_string(), "orders": count}),
        );
    }

    let mut mismatches = Vec::new();
    compare(
        pool,
        "orders",
        "SELECT id::text, to_jsonb(t) FROM projections.orders t",
        &expected_orders,
        &mut mismatches,
    )
    .await?;
    compare(
        pool,
        "payments",
        "SELECT id::text, to_jsonb(t) FROM projections.payments t",
        &expected_payments,
        &mut mismatches,
    )
    .await?;
    compare(
        pool,
        "customers",
        // Sealed personal values (ADR 0020) are left out: this check holds no master key.
        "SELECT id::text,
                CASE WHEN t.sealed THEN to_jsonb(t) - 'email' - 'name' ELSE to_jsonb(t) END
           FROM projections.customers t",
        &expected_customers,
        &mut mismatches,
    )
    .await?;
    compare(
        pool,
        "customer_spend",
        "SELECT customer_id::text || '/' || currency,
                jsonb_build_object('gross', gross::text, 'refunded', refunded::text, 'orders', orders)
           FROM projections.customer_spend
          WHERE gross <> 0 OR refunded <> 0 OR orders <> 0",
        &expected_spend,
        &mut mismatches,
    )
    .await?;
    Ok(mismatches)
}

/// What the read model holds for a personal field: the clear text, null when withheld (an
/// erased customer's), or `None` when sealed with a key this check does not hold.
fn personal<T: serde::Serialize>(value: &Option<Personal<T>>) -> Option<Value> {
    match value {
        Some(Personal::Sealed(sealed)) if !sealed.is_withheld() => None,
        Some(Personal::Sealed(_)) | None => Some(Value::Null),
        Some(Personal::Clear(clear)) => Some(json!(clear)),
    }
}

/// Normalise a value for comparison: timestamps to their instant, numbers as numbers.
fn normal(v: &Value) -> Value {
    if let Some(s) = v.as_str() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return json!(t.timestamp_micros());
        }
    }
    v.clone()
}

async fn compare(
    pool: &PgPool,
    table: &'static str,
    sql: &str,
    expected: &BTreeMap<String, Value>,
    out: &mut Vec<Mismatch>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, Value)> = sqlx::query_as(sql).fetch_all(pool).await?;
    let actual: BTreeMap<String, Value> = rows.into_iter().collect();
    for (id, want) in expected {
        let Some(have) = actual.get(id) else {
            out.push(Mismatch {
                table,
                id: id.clone(),
                field: "*".into(),
                expected: want.clone(),
                actual: Value::Null,
            });
            continue;
        };
        for (field, value) in want.as_object().into_iter().flatten() {
            // A field the row's query leaves out (a sealed value) is not compared.
            let Some(got) = have.get(field).cloned() else {
                continue;
            };
            if normal(value) != normal(&got) {
                out.push(Mismatch {
                    table,
                    id: id.clone(),
                    field: field.clone(),
                    expected: value.clone(),
                    actual: got,
                });
            }
        }
    }
    for (id, have) in &actual {
        if !expected.contains_key(id) {
            out.push(Mismatch {
                table,
                id: id.clone(),
                field: "*".into(),
                expected: Value::Null,
                actual: have.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spend_sum_past_i128_is_an_overflow_naming_the_customer_not_a_wrap() {
        let key = ("c-1".to_owned(), "EUR".to_owned());

        assert_eq!(
            add_spend(i128::MAX - 5, 5, &key, "gross").unwrap(),
            i128::MAX
        );
        let err = add_spend(i128::MAX - 5, 6, &key, "gross").unwrap_err();

        assert_eq!(err.to_string(), "customer c-1's gross in EUR overflows");
    }
}

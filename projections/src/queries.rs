//! Reading the read models, shaped like the API's responses (DESIGN.md §4).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A page of a list: the items and the cursor for the next page, if there is one.
pub struct Page {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
}

fn page(mut items: Vec<(Uuid, Value)>, limit: i64) -> Page {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    Page {
        next_cursor: if more {
            items.last().map(|(id, _)| id.to_string())
        } else {
            None
        },
        items: items.into_iter().map(|(_, v)| v).collect(),
    }
}

const ORDER_COLUMNS: &str = "id, customer_id, status, payment_status, fulfillment_status, currency,
    total, line_count, lines, placed_at, updated_at, version";

fn order_json(r: &PgRow) -> Result<(Uuid, Value), sqlx::Error> {
    let id: Uuid = r.try_get("id")?;
    Ok((
        id,
        json!({
            "id": id,
            "customer_id": r.try_get::<Uuid, _>("customer_id")?,
            "status": r.try_get::<String, _>("status")?,
            "payment_status": r.try_get::<String, _>("payment_status")?,
            "fulfillment_status": r.try_get::<String, _>("fulfillment_status")?,
            "currency": r.try_get::<String, _>("currency")?,
            "total": r.try_get::<i64, _>("total")?,
            "line_count": r.try_get::<i32, _>("line_count")?,
            "lines": r.try_get::<Value, _>("lines")?,
            "placed_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>("placed_at")?,
            "updated_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>("updated_at")?,
            "version": r.try_get::<i64, _>("version")?,
        }),
    ))
}

pub async fn order(pool: &PgPool, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM projections.orders WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| order_json(&r).map(|(_, v)| v)).transpose()
}

/// Orders, newest id last, filtered by customer and status, after `cursor` (an order id).
pub async fn orders(
    pool: &PgPool,
    customer_id: Option<Uuid>,
    status: Option<&str>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM projections.orders
          WHERE ($1::uuid IS NULL OR customer_id = $1)
            AND ($2::text IS NULL OR status = $2)
            AND ($3::uuid IS NULL OR id > $3)
          ORDER BY id LIMIT $4"
    ))
    .bind(customer_id)
    .bind(status)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let items = rows.iter().map(order_json).collect::<Result<_, _>>()?;
    Ok(page(items, limit))
}

const PAYMENT_COLUMNS: &str = "id, order_id, customer_id, status, currency, amount, authorized,
    captured, refunded, method, created_at, updated_at, version";

fn payment_json(r: &PgRow) -> Result<(Uuid, Value), sqlx::Error> {
    let id: Uuid = r.try_get("id")?;
    Ok((
        id,
        json!({
            "id": id,
            "order_id": r.try_get::<Uuid, _>("order_id")?,
            "customer_id": r.try_get::<Uuid, _>("customer_id")?,
            "status": r.try_get::<String, _>("status")?,
            "currency": r.try_get::<String, _>("currency")?,
            "amount": r.try_get::<i64, _>("amount")?,
            "authorized": r.try_get::<i64, _>("authorized")?,
            "captured": r.try_get::<i64, _>("captured")?,
            "refunded": r.try_get::<i64, _>("refunded")?,
            "method": r.try_get::<String, _>("method")?,
            "created_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>("created_at")?,
            "updated_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>("updated_at")?,
            "version": r.try_get::<i64, _>("version")?,
        }),
    ))
}

pub async fn payment(pool: &PgPool, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM projections.payments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| payment_json(&r).map(|(_, v)| v)).transpose()
}

pub async fn payments(
    pool: &PgPool,
    order_id: Option<Uuid>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM projections.payments
          WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR id > $2)
          ORDER BY id LIMIT $3"
    ))
    .bind(order_id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let items = rows.iter().map(payment_json).collect::<Result<_, _>>()?;
    Ok(page(items, limit))
}

/// Spending per currency: gross, refunded, net and average order value (rounded down).
async fn spent(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, Map<String, Value>>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT customer_id, currency, gross, refunded, orders
           FROM projections.customer_spend WHERE customer_id = ANY($1) ORDER BY currency",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<Uuid, Map<String, Value>> = BTreeMap::new();
    for (id, currency, gross, refunded, orders) in rows {
        let average = if orders > 0 {
            gross.div_euclid(orders)
        } else {
            0
        };
        out.entry(id).or_default().insert(
            currency,
            json!({"gross": gross, "refunded": refunded, "net": gross - refunded, "average_order_value": average}),
        );
    }
    Ok(out)
}

const CUSTOMER_COLUMNS: &str = "id, email, name, order_count, cancelled_count, open_orders,
    notes_count, first_order_at, last_order_at, registered_at";

fn customer_json(r: &PgRow) -> Result<(Uuid, Value), sqlx::Error> {
    let id: Uuid = r.try_get("id")?;
    Ok((
        id,
        json!({
            "id": id,
            "email": r.try_get::<Option<String>, _>("email")?,
            "name": r.try_get::<Option<String>, _>("name")?,
            "order_count": r.try_get::<i64, _>("order_count")?,
            "cancelled_count": r.try_get::<i64, _>("cancelled_count")?,
            "open_orders": r.try_get::<i64, _>("open_orders")?,
            "notes_count": r.try_get::<i64, _>("notes_count")?,
            "first_order_at": r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("first_order_at")?,
            "last_order_at": r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("last_order_at")?,
            "registered_at": r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("registered_at")?,
            "spent": {},
        }),
    ))
}

async fn with_spent(
    pool: &PgPool,
    mut items: Vec<(Uuid, Value)>,
) -> Result<Vec<(Uuid, Value)>, sqlx::Error> {
    let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let mut spent = spent(pool, &ids).await?;
    for (id, item) in &mut items {
        if let Some(s) = spent.remove(id) {
            item["spent"] = Value::Object(s);
        }
    }
    Ok(items)
}

pub async fn customer(pool: &PgPool, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM projections.customers WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let items = with_spent(pool, vec![customer_json(&row)?]).await?;
    Ok(items.into_iter().next().map(|(_, v)| v))
}

/// Customers, by e-mail (case-insensitive) if given, after `cursor` (a customer id).
pub async fn customers(
    pool: &PgPool,
    email: Option<&str>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM projections.customers
          WHERE ($1::text IS NULL OR lower(email) = lower($1)) AND ($2::uuid IS NULL OR id > $2)
          ORDER BY id LIMIT $3"
    ))
    .bind(email)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(customer_json)
        .collect::<Result<Vec<_>, _>>()?;
    let items = with_spent(pool, items).await?;
    Ok(page(items, limit))
}

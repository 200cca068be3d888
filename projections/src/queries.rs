//! Reading the read models into their views ([`crate::views`]), the shapes the API answers.
//! Lists are ordered by id and cursor-paginated: the cursor is the last id of a page.
//!
//! Customers' sealed e-mail and name (ADR 0020) are opened here, for the authorized reads
//! that call these queries: a page at a time, with one key lookup for all of its customers.

use std::collections::BTreeMap;

use ordo_commands::privacy::{KeyState, Keyring};
use sqlx::PgPool;
use uuid::Uuid;

use crate::customers::numeric;
use crate::views::{CustomerView, OrderStatus, OrderView, Page, PaymentView, Spent};

/// Cut a `limit + 1` fetch to a page: the extra row only says there is a next page.
fn page<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    Page {
        next_cursor: if more {
            items.last().map(|item| id(item).to_string())
        } else {
            None
        },
        items,
    }
}

const ORDER_COLUMNS: &str =
    "id, customer_id, channel, status, payment_status, fulfillment_status, currency,
    total, line_count, lines, placed_at, updated_at, version";

/// Order `id`, if it is in `channel` (`None`: any channel).
pub async fn order(
    pool: &PgPool,
    channel: Option<&str>,
    id: Uuid,
) -> Result<Option<OrderView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM projections.orders
          WHERE id = $1 AND ($2::text IS NULL OR channel = $2)"
    ))
    .bind(id)
    .bind(channel)
    .fetch_optional(pool)
    .await
}

/// Orders, oldest id first, filtered by channel, customer and status, after `cursor` (an
/// order id).
pub async fn orders(
    pool: &PgPool,
    channel: Option<&str>,
    customer_id: Option<Uuid>,
    status: Option<OrderStatus>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page<OrderView>, sqlx::Error> {
    let rows: Vec<OrderView> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM projections.orders
          WHERE ($1::uuid IS NULL OR customer_id = $1)
            AND ($2::text IS NULL OR status = $2)
            AND ($3::uuid IS NULL OR id > $3)
            AND ($5::text IS NULL OR channel = $5)
          ORDER BY id LIMIT $4"
    ))
    .bind(customer_id)
    .bind(status.map(OrderStatus::as_str))
    .bind(cursor)
    .bind(limit + 1)
    .bind(channel)
    .fetch_all(pool)
    .await?;
    Ok(page(rows, limit, |o| o.id))
}

const PAYMENT_COLUMNS: &str =
    "id, order_id, customer_id, channel, status, currency, amount, authorized,
    captured, refunded, method, created_at, updated_at, version";

/// Payment `id`, if it is in `channel` (`None`: any channel).
pub async fn payment(
    pool: &PgPool,
    channel: Option<&str>,
    id: Uuid,
) -> Result<Option<PaymentView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM projections.payments
          WHERE id = $1 AND ($2::text IS NULL OR channel = $2)"
    ))
    .bind(id)
    .bind(channel)
    .fetch_optional(pool)
    .await
}

/// Payments, oldest id first, of one channel and one order if given, after `cursor` (a
/// payment id).
pub async fn payments(
    pool: &PgPool,
    channel: Option<&str>,
    order_id: Option<Uuid>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page<PaymentView>, sqlx::Error> {
    let rows: Vec<PaymentView> = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM projections.payments
          WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR id > $2)
            AND ($4::text IS NULL OR channel = $4)
          ORDER BY id LIMIT $3"
    ))
    .bind(order_id)
    .bind(cursor)
    .bind(limit + 1)
    .bind(channel)
    .fetch_all(pool)
    .await?;
    Ok(page(rows, limit, |p| p.id))
}

/// Fill in each customer's spending per currency (a second table, one query for the page).
async fn with_spent(
    pool: &PgPool,
    mut customers: Vec<CustomerView>,
) -> Result<Vec<CustomerView>, sqlx::Error> {
    let ids: Vec<Uuid> = customers.iter().map(|c| c.id).collect();
    let rows: Vec<(Uuid, String, String, String, i64)> = sqlx::query_as(
        "SELECT customer_id, currency, gross::text, refunded::text, orders
           FROM projections.customer_spend WHERE customer_id = ANY($1) ORDER BY currency",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut spent: BTreeMap<Uuid, BTreeMap<String, Spent>> = BTreeMap::new();
    for (id, currency, gross, refunded, orders) in rows {
        let (gross, refunded) = (numeric(gross)?, numeric(refunded)?);
        // Far inside i128 as the projector writes them (see `SpendRow`); checked all the same,
        // since the table is only text to this function.
        let net = gross.checked_sub(refunded).ok_or_else(|| {
            sqlx::Error::Decode(format!("customer {id}'s net spend in {currency} overflows").into())
        })?;
        let average_order_value = if orders > 0 {
            gross.div_euclid(i128::from(orders))
        } else {
            0
        };
        spent.entry(id).or_default().insert(
            currency,
            Spent {
                gross,
                refunded,
                net,
                average_order_value,
            },
        );
    }
    for customer in &mut customers {
        customer.spent = spent.remove(&customer.id).unwrap_or_default();
    }
    Ok(customers)
}

const CUSTOMER_COLUMNS: &str =
    "id, channel, email, name, sealed, order_count, cancelled_count, open_orders,
    notes_count, first_order_at, last_order_at, registered_at";

/// Open the sealed e-mail and name of `customers` with their data keys, looked up once for
/// all of them. A customer whose key is destroyed (erased, the read model not caught up
/// yet) or not available to this process shows neither.
async fn open(keys: &Keyring, customers: &mut [CustomerView]) -> Result<(), sqlx::Error> {
    let mut ids: Vec<Uuid> = customers
        .iter()
        .filter(|c| c.sealed)
        .map(|c| c.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    let states = keys.states(&ids).await?;
    for customer in customers.iter_mut().filter(|c| c.sealed) {
        let id = customer.id;
        let state = states.get(&id).unwrap_or(&KeyState::None);
        state.open_in_place(id, "email", &mut customer.email);
        state.open_in_place(id, "name", &mut customer.name);
        customer.sealed = false;
    }
    Ok(())
}

/// Customer `id`, if it is in `channel` (`None`: any channel), its personal data opened
/// with `keys`.
pub async fn customer(
    pool: &PgPool,
    keys: &Keyring,
    channel: Option<&str>,
    id: Uuid,
) -> Result<Option<CustomerView>, sqlx::Error> {
    let row: Option<CustomerView> = sqlx::query_as(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM projections.customers
          WHERE id = $1 AND ($2::text IS NULL OR channel = $2)"
    ))
    .bind(id)
    .bind(channel)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut rows = vec![row];
    open(keys, &mut rows).await?;
    Ok(with_spent(pool, rows).await?.pop())
}

/// Which customers a lookup by e-mail finds.
#[derive(Debug, Clone, Copy)]
pub enum ByEmail<'a> {
    /// By the read model's clear text, case-insensitive (encryption off; through
    /// `customers_by_lower_email`, and rows still sealed by an earlier master key are not
    /// found).
    Clear(&'a str),
    /// The customers the key store's blind index names for the address (encryption on).
    Indexed(&'a [Uuid]),
}

/// Customers, oldest id first, by e-mail if given, after `cursor` (a customer id), their
/// personal data opened with `keys`. Never sorted by a personal field: the table holds them
/// sealed.
pub async fn customers(
    pool: &PgPool,
    keys: &Keyring,
    channel: Option<&str>,
    email: Option<ByEmail<'_>>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page<CustomerView>, sqlx::Error> {
    let (clear, ids) = match email {
        None => (None, None),
        Some(ByEmail::Clear(email)) => (Some(email), None),
        Some(ByEmail::Indexed(ids)) => (None, Some(ids)),
    };
    let rows: Vec<CustomerView> = sqlx::query_as(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM projections.customers
          WHERE ($1::text IS NULL OR (NOT sealed AND lower(email) = lower($1))) AND ($2::uuid IS NULL OR id > $2)
            AND ($4::text IS NULL OR channel = $4) AND ($5::uuid[] IS NULL OR id = ANY($5))
          ORDER BY id LIMIT $3"
    ))
    .bind(clear)
    .bind(cursor)
    .bind(limit + 1)
    .bind(channel)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut page = page(rows, limit, |c| c.id);
    open(keys, &mut page.items).await?;
    page.items = with_spent(pool, page.items).await?;
    Ok(page)
}

//! The CRM customer 360: counts and spending per customer, from customer, order and
//! payment events.
//!
//! The e-mail and name are kept sealed with the customer's data key (ADR 0020) whenever the
//! customer has one: the feed opens them for the fold, and [`seal`] seals them again before
//! the row is written, so the table never holds them in clear while encryption is on (a
//! rebuild included). [`crate::queries`] opens them for authorized reads; once the key is
//! destroyed they open no more, and `customer.erased` drops them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordo_domain::customer::CustomerEvent;
use ordo_domain::order::OrderEvent;
use ordo_domain::payment::PaymentEvent;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::model::{ApplyError, Decoded, DomainEvent};
use ordo_commands::privacy::{KeyState, Keyring};
use ordo_domain::event::types;

pub const TABLES: &[&str] = &["customers", "customer_spend"];

#[derive(Debug, Clone, Default)]
struct CustomerRow {
    /// The customer's sales channel, once registered (its stream's); never changes.
    channel: Option<String>,
    email: Option<String>,
    name: Option<String>,
    /// `email` and `name` hold the base64 of their values sealed with the customer's data
    /// key, not the values.
    sealed: bool,
    order_count: i64,
    cancelled_count: i64,
    open_orders: i64,
    notes_count: i64,
    first_order_at: Option<DateTime<Utc>>,
    last_order_at: Option<DateTime<Utc>>,
    registered_at: Option<DateTime<Utc>>,
}

/// Money sums in `i128` (`numeric` in the table): a lifetime of orders, each up to
/// `Amount::MAX`, overflows no sum, and the arithmetic is checked anyway.
#[derive(Debug, Clone, Default)]
struct SpendRow {
    gross: i128,
    refunded: i128,
    orders: i64,
}

/// What one event changes for a customer.
enum Change {
    /// The e-mail and name in clear, or `None` where this reader may not read them.
    Registered {
        channel: String,
        email: Option<String>,
        name: Option<String>,
        at: DateTime<Utc>,
    },
    /// The customer's personal data was erased: the clear text leaves the read model.
    Erased,
    Note,
    Placed {
        currency: String,
        total: i64,
        at: DateTime<Utc>,
    },
    Cancelled {
        currency: String,
        total: i64,
    },
    Delivered,
    Refunded {
        currency: String,
        amount: i64,
    },
}

/// Events of the aggregates this view follows that change nothing in it (the feed sends
/// them without payload). Any other unknown type is an error, not a silent skip.
const IGNORED: &[&str] = &[
    types::ORDER_CONFIRMED,
    types::ORDER_SHIPPED,
    types::ORDER_PAYMENT_STATUS_CHANGED,
    types::PAYMENT_CREATED,
    types::PAYMENT_AUTHORIZED,
    types::PAYMENT_CAPTURED,
    types::PAYMENT_VOIDED,
    types::PAYMENT_FAILED,
];

fn change_of(decoded: &Decoded) -> Result<Option<(Uuid, Change)>, ApplyError> {
    let event = &decoded.envelope;
    if IGNORED.contains(&event.event_type.as_str())
        || !matches!(
            event.aggregate_type.as_str(),
            "customer" | "order" | "payment"
        )
    {
        return Ok(None);
    }
    if let Some(error) = decoded.undecodable() {
        return Err(error);
    }
    Ok(match &decoded.event {
        DomainEvent::Customer(CustomerEvent::Registered(r)) => Some((
            r.customer_id,
            Change::Registered {
                channel: event.channel.clone(),
                email: r.email.clear().map(ToString::to_string),
                name: r.name.clear().map(ToString::to_string),
                at: r.registered_at,
            },
        )),
        DomainEvent::Customer(CustomerEvent::NoteAdded(n)) => Some((n.customer_id, Change::Note)),
        DomainEvent::Customer(CustomerEvent::Erased(e)) => Some((e.customer_id, Change::Erased)),
        DomainEvent::Order(OrderEvent::Placed(p)) => Some((
            p.customer_id,
            Change::Placed {
                currency: p.currency.to_string(),
                total: p.total.get(),
                at: p.placed_at,
            },
        )),
        DomainEvent::Order(OrderEvent::Cancelled(c)) => Some((
            c.customer_id,
            Change::Cancelled {
                currency: c.currency.to_string(),
                total: c.total.get(),
            },
        )),
        DomainEvent::Order(OrderEvent::Delivered(d)) => Some((d.customer_id, Change::Delivered)),
        DomainEvent::Payment(PaymentEvent::Refunded(r)) => Some((
            r.customer_id,
            Change::Refunded {
                currency: r.currency.to_string(),
                amount: r.amount.get(),
            },
        )),
        _ => None,
    })
}

pub async fn apply(
    conn: &mut PgConnection,
    schema: &str,
    events: &[Decoded],
    keys: &Keyring,
) -> Result<(), ApplyError> {
    let changes = changes(events)?;
    if changes.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = changes.iter().map(|(id, _, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut customers = load_customers(conn, schema, &ids).await?;
    let mut spend = load_spend(conn, schema, &ids).await?;
    let touched_spend = fold(changes, &mut customers, &mut spend)?;
    seal(conn, keys, &ids, &mut customers).await?;
    save_customers(conn, schema, &ids, &customers).await?;
    save_spend(conn, schema, &touched_spend, &spend).await?;
    Ok(())
}

/// Seal the clear e-mail and name of the batch's customers (`ids`, sorted) that have a data
/// key, with one key lookup for the batch: those just registered, and rows written in clear
/// before (encryption off then, or not sealed by `ordo privacy migrate` yet). Without a
/// master key (encryption off) they stay clear.
async fn seal(
    conn: &mut PgConnection,
    keys: &Keyring,
    ids: &[Uuid],
    customers: &mut HashMap<Uuid, CustomerRow>,
) -> Result<(), sqlx::Error> {
    if !keys.encrypts() {
        return Ok(());
    }
    let clear: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| customers.get(id).is_some_and(CustomerRow::holds_clear))
        .collect();
    if clear.is_empty() {
        return Ok(());
    }
    for (id, state) in keys.states_on(conn, &clear).await? {
        if let Some(row) = customers.get_mut(&id) {
            row.seal_with(id, &state);
        }
    }
    Ok(())
}

impl CustomerRow {
    pub(crate) fn holds_clear(&self) -> bool {
        !self.sealed && (self.email.is_some() || self.name.is_some())
    }

    /// Seal the clear e-mail and name with `state`'s key, if it holds one.
    pub(crate) fn seal_with(&mut self, id: Uuid, state: &KeyState) {
        if !matches!(state, KeyState::Key(_)) || self.sealed {
            return;
        }
        state.seal_in_place(id, "email", &mut self.email);
        state.seal_in_place(id, "name", &mut self.name);
        self.sealed = true;
    }
}

/// What the batch changes, customer by customer, with the event each change comes from.
fn changes(events: &[Decoded]) -> Result<Vec<(Uuid, Change, &Decoded)>, ApplyError> {
    let mut changes = Vec::new();
    for event in events {
        if let Some((id, change)) = change_of(event)? {
            changes.push((id, change, event));
        }
    }
    Ok(changes)
}

/// Apply the changes to the rows in memory (every customer they name, as loaded: a missing
/// one starts empty); returns the spending rows they changed, sorted.
fn fold(
    changes: Vec<(Uuid, Change, &Decoded)>,
    customers: &mut HashMap<Uuid, CustomerRow>,
    spend: &mut HashMap<(Uuid, String), SpendRow>,
) -> Result<Vec<(Uuid, String)>, ApplyError> {
    let mut touched_spend = Vec::new();
    for (id, change, event) in changes {
        let customer = customers.entry(id).or_default();
        match change {
            Change::Registered {
                channel,
                email,
                name,
                at,
            } => {
                customer.channel = Some(channel);
                customer.email = email;
                customer.name = name;
                customer.sealed = false;
                customer.registered_at = Some(at);
            }
            Change::Erased => {
                customer.email = None;
                customer.name = None;
                customer.sealed = false;
            }
            Change::Note => customer.notes_count += 1,
            Change::Placed {
                currency,
                total,
                at,
            } => {
                customer.order_count += 1;
                customer.open_orders += 1;
                customer.first_order_at = Some(customer.first_order_at.map_or(at, |f| f.min(at)));
                customer.last_order_at = Some(customer.last_order_at.map_or(at, |l| l.max(at)));
                let s = spend.entry((id, currency.clone())).or_default();
                s.gross = sum(event, s.gross.checked_add(total.into()))?;
                s.orders += 1;
                touched_spend.push((id, currency));
            }
            Change::Cancelled { currency, total } => {
                customer.cancelled_count += 1;
                customer.open_orders -= 1;
                let s = spend.entry((id, currency.clone())).or_default();
                s.gross = sum(event, s.gross.checked_sub(total.into()))?;
                s.orders -= 1;
                touched_spend.push((id, currency));
            }
            Change::Delivered => customer.open_orders -= 1,
            Change::Refunded { currency, amount } => {
                let s = spend.entry((id, currency.clone())).or_default();
                s.refunded = sum(event, s.refunded.checked_add(amount.into()))?;
                touched_spend.push((id, currency));
            }
        }
    }
    touched_spend.sort_unstable();
    touched_spend.dedup();
    Ok(touched_spend)
}

/// A checked sum, or the event that would overflow it (unreachable with amounts capped at
/// `Amount::MAX` and fewer than 10^23 orders, but never a wrap).
fn sum(event: &Decoded, checked: Option<i128>) -> Result<i128, ApplyError> {
    checked.ok_or_else(|| ApplyError::inconsistent(&event.envelope, "a money sum overflows"))
}

async fn load_customers(
    conn: &mut PgConnection,
    schema: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, CustomerRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT id, channel, email, name, sealed, order_count, cancelled_count, open_orders,
                notes_count, first_order_at, last_order_at, registered_at
           FROM {schema}.customers WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                CustomerRow {
                    channel: r.try_get("channel")?,
                    email: r.try_get("email")?,
                    name: r.try_get("name")?,
                    sealed: r.try_get("sealed")?,
                    order_count: r.try_get("order_count")?,
                    cancelled_count: r.try_get("cancelled_count")?,
                    open_orders: r.try_get("open_orders")?,
                    notes_count: r.try_get("notes_count")?,
                    first_order_at: r.try_get("first_order_at")?,
                    last_order_at: r.try_get("last_order_at")?,
                    registered_at: r.try_get("registered_at")?,
                },
            ))
        })
        .collect()
}

async fn load_spend(
    conn: &mut PgConnection,
    schema: &str,
    ids: &[Uuid],
) -> Result<HashMap<(Uuid, String), SpendRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT customer_id, currency, gross::text, refunded::text, orders
           FROM {schema}.customer_spend WHERE customer_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                (r.try_get("customer_id")?, r.try_get("currency")?),
                SpendRow {
                    gross: numeric(r.try_get("gross")?)?,
                    refunded: numeric(r.try_get("refunded")?)?,
                    orders: r.try_get("orders")?,
                },
            ))
        })
        .collect()
}

async fn save_customers(
    conn: &mut PgConnection,
    schema: &str,
    ids: &[Uuid],
    rows: &HashMap<Uuid, CustomerRow>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(Uuid, &CustomerRow)> = ids
        .iter()
        .filter_map(|id| rows.get(id).map(|r| (*id, r)))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO {schema}.customers (id, email, name, order_count, cancelled_count,
                open_orders, notes_count, first_order_at, last_order_at, registered_at, channel,
                sealed)
         SELECT id, email, name, order_count, cancelled_count, open_orders, notes_count,
                first_order_at, last_order_at, registered_at, coalesce(channel, 'default'), sealed
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                $6::bigint[], $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                $11::text[], $12::boolean[])
             AS u(id, email, name, order_count, cancelled_count, open_orders, notes_count,
                  first_order_at, last_order_at, registered_at, channel, sealed)
         ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, sealed = EXCLUDED.sealed,
             email = EXCLUDED.email, name = EXCLUDED.name, order_count = EXCLUDED.order_count,
             cancelled_count = EXCLUDED.cancelled_count, open_orders = EXCLUDED.open_orders,
             notes_count = EXCLUDED.notes_count, first_order_at = EXCLUDED.first_order_at,
             last_order_at = EXCLUDED.last_order_at, registered_at = EXCLUDED.registered_at"
    ))
    .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.email.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.name.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.order_count).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.cancelled_count).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.open_orders).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.notes_count).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.first_order_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.last_order_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.registered_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.channel.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.sealed).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

async fn save_spend(
    conn: &mut PgConnection,
    schema: &str,
    keys: &[(Uuid, String)],
    rows: &HashMap<(Uuid, String), SpendRow>,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&(Uuid, String), &SpendRow)> = keys
        .iter()
        .filter_map(|k| rows.get(k).map(|r| (k, r)))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO {schema}.customer_spend (customer_id, currency, gross, refunded, orders)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[]::numeric[],
                              $4::text[]::numeric[], $5::bigint[])
         ON CONFLICT (customer_id, currency) DO UPDATE SET
             gross = EXCLUDED.gross, refunded = EXCLUDED.refunded, orders = EXCLUDED.orders"
    ))
    .bind(rows.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|(k, _)| k.1.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, r)| r.gross.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, r)| r.refunded.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, r)| r.orders).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A whole `numeric` read as text (sqlx decodes `numeric` only with a decimal crate).
pub(crate) fn numeric(text: String) -> Result<i128, sqlx::Error> {
    text.parse()
        .map_err(|e| sqlx::Error::Decode(format!("`{text}` is not a whole number: {e}").into()))
}

#[cfg(test)]
mod tests {
    use ordo_domain::customer::CustomerCommand;
    use ordo_domain::order::OrderCommand;

    use super::*;
    use crate::fixtures::{at, line, text, Log};

    const CUSTOMER: Uuid = Uuid::from_u128(1);

    /// The two tables, as `apply` leaves them between batches.
    #[derive(Default)]
    struct Tables {
        customers: HashMap<Uuid, CustomerRow>,
        spend: HashMap<(Uuid, String), SpendRow>,
    }

    impl Tables {
        fn apply(&mut self, batch: &[Decoded]) -> Result<(), ApplyError> {
            fold(changes(batch)?, &mut self.customers, &mut self.spend)?;
            Ok(())
        }

        fn customer(&self) -> &CustomerRow {
            &self.customers[&CUSTOMER]
        }

        fn euros(&self) -> &SpendRow {
            &self.spend[&(CUSTOMER, "EUR".to_owned())]
        }
    }

    fn registered(channel: &str) -> Log {
        let mut log = Log::new(channel);
        log.register(CUSTOMER, "ada@example.com", "Ada Lovelace", 0);
        log
    }

    fn note(log: &mut Log, n: u128) {
        log.customer(
            CUSTOMER,
            CustomerCommand::AddNote {
                note_id: Uuid::from_u128(100 + n),
                text: text("called about the invoice"),
                at: at(1),
            },
        );
    }

    /// Place, pay in full, confirm, ship and deliver an order of `total` minor units.
    fn delivered(log: &mut Log, order: Uuid, payment: Uuid, total: i64, minute: i64) {
        log.place(order, CUSTOMER, vec![line("A-1", 1, total)], minute);
        log.pay(payment, order, total, minute);
        log.authorize(payment, minute);
        log.capture(payment, total, minute);
        log.order(order, OrderCommand::Confirm { at: at(minute) });
        log.ship(order, None, minute + 1);
        log.order(order, OrderCommand::Deliver { at: at(minute + 2) });
    }

    #[test]
    fn a_customer_with_orders_and_notes_counts_each_and_sums_the_spending() {
        let mut log = registered("web");
        note(&mut log, 1);
        note(&mut log, 2);
        let mut tables = Tables::default();
        tables.apply(&log.batch()).unwrap();
        let customer = tables.customer();
        assert_eq!(customer.email.as_deref(), Some("ada@example.com"));
        assert_eq!(customer.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(customer.channel.as_deref(), Some("web"));
        assert_eq!((customer.notes_count, customer.order_count), (2, 0));
        assert_eq!(customer.registered_at, Some(at(0)));

        let (first, second, third) = (
            Uuid::from_u128(11),
            Uuid::from_u128(12),
            Uuid::from_u128(13),
        );
        let payment = Uuid::from_u128(21);
        delivered(&mut log, first, payment, 4000, 10);
        log.place(second, CUSTOMER, vec![line("B-2", 2, 1500)], 20);
        log.place(third, CUSTOMER, vec![line("C-3", 1, 999)], 30);
        tables.apply(&log.batch()).unwrap();
        log.order(
            third,
            OrderCommand::Cancel {
                reason: text("changed my mind"),
                at: at(31),
            },
        );
        log.refund(payment, 700, 40);
        tables.apply(&log.batch()).unwrap();

        let customer = tables.customer();
        assert_eq!(
            (
                customer.order_count,
                customer.cancelled_count,
                customer.open_orders
            ),
            (3, 1, 1),
            "three placed, one cancelled, one delivered: one still open"
        );
        assert_eq!(customer.first_order_at, Some(at(10)));
        assert_eq!(customer.last_order_at, Some(at(30)));
        assert_eq!(customer.notes_count, 2);
        let spend = tables.euros();
        assert_eq!((spend.gross, spend.refunded, spend.orders), (7000, 700, 2));
    }

    #[test]
    fn erasure_drops_the_personal_fields_and_keeps_the_counts() {
        let mut log = registered("web");
        note(&mut log, 1);
        log.place(Uuid::from_u128(11), CUSTOMER, vec![line("A-1", 1, 100)], 5);
        let mut tables = Tables::default();
        tables.apply(&log.batch()).unwrap();
        log.customer(CUSTOMER, CustomerCommand::Erase { at: at(50) });
        tables.apply(&log.batch()).unwrap();
        let customer = tables.customer();
        assert_eq!(
            (customer.email.as_deref(), customer.name.as_deref()),
            (None, None)
        );
        assert_eq!((customer.notes_count, customer.order_count), (1, 1));
        assert_eq!(customer.channel.as_deref(), Some("web"));
        assert_eq!(customer.registered_at, Some(at(0)));
        assert_eq!(tables.euros().gross, 100);
    }

    #[test]
    fn a_customer_only_known_from_orders_has_no_personal_fields_nor_channel() {
        let mut log = Log::new("pos");
        log.place(Uuid::from_u128(11), CUSTOMER, vec![line("A-1", 2, 250)], 5);
        let mut tables = Tables::default();
        tables.apply(&log.batch()).unwrap();
        let customer = tables.customer();
        assert_eq!(customer.email, None);
        // Its channel is registration's: `save_customers` writes the default until then.
        assert_eq!(customer.channel, None);
        assert_eq!((customer.order_count, customer.open_orders), (1, 1));
        assert_eq!(tables.euros().gross, 500);
    }

    #[test]
    fn events_that_change_nothing_here_are_passed_over_unread() {
        let mut log = registered("default");
        log.place(Uuid::from_u128(11), CUSTOMER, vec![line("A-1", 1, 100)], 5);
        log.order(Uuid::from_u128(11), OrderCommand::Confirm { at: at(6) });
        let batch = log.batch();
        let changes = changes(&batch).unwrap();
        let types: Vec<&str> = changes
            .iter()
            .map(|(_, _, d)| d.envelope.event_type.as_str())
            .collect();
        assert_eq!(types, [types::CUSTOMER_REGISTERED, types::ORDER_PLACED]);
    }
}

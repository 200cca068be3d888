//! The personal values the notification worker keeps — its recipients' e-mail and name,
//! each notification's recipient and body — sealed with the customer's data key (ADR 0020),
//! as base64 text in the same columns, the row's `sealed` saying so. Opened only to send a
//! mail and for authorized reads (`GET /v1/notifications`, the console); once the key is
//! destroyed they open no more, and `customer.erased` drops them.
//!
//! Rows written in clear (encryption off, or before this) stay clear until `ordo privacy
//! migrate` seals them ([`seal_rows`]).

use std::collections::HashMap;

use ordo_commands::privacy::{KeyState, Keyring, SealedColumns};
use sqlx::PgConnection;
use uuid::Uuid;

/// A value as a column stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    pub text: Option<String>,
    pub sealed: bool,
}

/// `customer`'s key state, looked up only when encryption is on.
pub(super) async fn state(
    conn: &mut PgConnection,
    keys: &Keyring,
    customer: Uuid,
) -> Result<KeyState, sqlx::Error> {
    Ok(states_on(conn, keys, &[customer])
        .await?
        .remove(&customer)
        .unwrap_or(KeyState::None))
}

/// The key states of `customers`, in one lookup, and only when encryption is on (else
/// none: a customer missing from the map has no key).
pub(super) async fn states_on(
    conn: &mut PgConnection,
    keys: &Keyring,
    customers: &[Uuid],
) -> Result<HashMap<Uuid, KeyState>, sqlx::Error> {
    if !keys.encrypts() || customers.is_empty() {
        return Ok(HashMap::new());
    }
    keys.states_on(conn, customers).await
}

/// `values` (column name, clear value) as their columns store them: sealed with `state`'s
/// key when it holds one, all of them, else clear.
pub(super) fn seal<const N: usize>(
    state: &KeyState,
    customer: Uuid,
    values: [(&str, Option<&str>); N],
) -> [Column; N] {
    let sealed = matches!(state, KeyState::Key(_));
    values.map(|(field, value)| Column {
        text: value.and_then(|v| {
            if sealed {
                state.seal_text(customer, field, v)
            } else {
                Some(v.to_owned())
            }
        }),
        sealed,
    })
}

/// `values` (column name, stored text) of a row in clear: opened with `state` when the row
/// is `sealed`, `None` for a value that does not open (erased, or no key here).
pub(super) fn open<const N: usize>(
    state: &KeyState,
    customer: Uuid,
    sealed: bool,
    values: [(&str, Option<String>); N],
) -> [Option<String>; N] {
    values.map(|(field, value)| {
        let value = value?;
        if sealed {
            state.open_text(customer, field, &value)
        } else {
            Some(value)
        }
    })
}

/// The key states of the customers of `rows` that are sealed, in one lookup.
pub(super) async fn states(
    keys: &Keyring,
    sealed: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, KeyState>, sqlx::Error> {
    let mut ids: Vec<Uuid> = sealed.collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort_unstable();
    ids.dedup();
    keys.states(&ids).await
}

/// The notification worker's personal columns: its recipients', and its notifications'.
const TABLES: [SealedColumns<'static>; 2] = [
    SealedColumns {
        table: "notification.customers",
        id: "customer_id",
        customer: "customer_id",
        fields: ["email", "name"],
    },
    SealedColumns {
        table: "notification.notifications",
        id: "id",
        customer: "customer_id",
        fields: ["recipient", "body"],
    },
];

/// Seal every clear row of `notification.customers` and `notification.notifications` whose
/// customer has a data key (`ordo privacy migrate`); an erased customer's clear values are
/// dropped. Returns how many rows were sealed. Idempotent; without a master key, does
/// nothing.
pub async fn seal_rows(keys: &Keyring) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    for table in &TABLES {
        sealed += keys.seal_rows(table).await?.sealed;
    }
    Ok(sealed)
}

//! Personal values in read-model and worker tables (ADR 0020): sealed with the customer's
//! data key as the events' fields are (AES-256-GCM, the customer id and the field name as
//! associated data), so that destroying the key makes those rows unreadable too.
//!
//! A column holds the base64 text of the sealed value (what an event's `{"sealed": …}`
//! holds) when its row says it is sealed, else the clear value (written while encryption
//! was off, or before `ordo privacy migrate` sealed it). Readers open a page of rows with
//! one key lookup for all of its customers ([`Keyring::states`]).

use serde_json::Value;
use uuid::Uuid;

use super::keys::KeyState;
use super::Keyring;

impl KeyState {
    /// `clear` sealed for `customer`'s column `field` (base64), when this state holds the
    /// customer's data key; `None` otherwise (encryption off, no key, erased, or a key this
    /// process cannot unwrap): the caller keeps the value clear, or drops it if erased.
    pub fn seal_text(&self, customer: Uuid, field: &str, clear: &str) -> Option<String> {
        let KeyState::Key(key) = self else {
            return None;
        };
        key.seal(customer, field, &Value::from(clear))
            .get("sealed")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The clear text of a column sealed by [`KeyState::seal_text`]; `None` when this state
    /// cannot open it (the customer was erased, or the key is not available).
    pub fn open_text(&self, customer: Uuid, field: &str, sealed: &str) -> Option<String> {
        let KeyState::Key(key) = self else {
            return None;
        };
        match key.open(customer, field, sealed)? {
            Value::String(clear) => Some(clear),
            _ => None,
        }
    }

    /// [`KeyState::seal_text`] in place: a value this state cannot seal is dropped.
    pub fn seal_in_place(&self, customer: Uuid, field: &str, value: &mut Option<String>) {
        *value = value
            .take()
            .and_then(|v| self.seal_text(customer, field, &v));
    }

    /// [`KeyState::open_text`] in place: a value this state cannot open is dropped.
    pub fn open_in_place(&self, customer: Uuid, field: &str, value: &mut Option<String>) {
        *value = value
            .take()
            .and_then(|v| self.open_text(customer, field, &v));
    }
}

/// A table whose rows each hold two personal values of one customer, in clear or sealed as
/// the row's boolean `sealed` says (for [`Keyring::seal_rows`]). Names come from code.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumns<'a> {
    /// Schema-qualified.
    pub table: &'a str,
    /// The row's `uuid` key.
    pub id: &'a str,
    /// The customer's id (`uuid`; the same column as `id` when rows are per customer).
    pub customer: &'a str,
    /// The value columns; each column's name is also its sealing's field name.
    pub fields: [&'a str; 2],
}

/// What [`Keyring::seal_rows`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsSealed {
    /// Rows whose clear values were sealed.
    pub sealed: u64,
    /// Rows of erased customers whose clear values were dropped.
    pub withheld: u64,
}

/// Rows read and sealed per round by [`Keyring::seal_rows`].
const BATCH: i64 = 500;

impl Keyring {
    /// Seal every row of `table` still holding clear values whose customer has a data key
    /// (`ordo privacy migrate`), with one key lookup per round of rows; an erased
    /// customer's clear values are dropped, a customer without a key keeps them. Rows
    /// sealed meanwhile by their owner are left as they are. Idempotent; without a master
    /// key, does nothing.
    pub async fn seal_rows(&self, table: &SealedColumns<'_>) -> Result<RowsSealed, sqlx::Error> {
        let mut done = RowsSealed::default();
        if !self.encrypts() {
            return Ok(done);
        }
        let SealedColumns {
            table,
            id,
            customer,
            fields: [a, b],
        } = *table;
        let select = format!(
            "SELECT {id}, {customer}, {a}, {b} FROM {table}
              WHERE NOT sealed AND ({a} IS NOT NULL OR {b} IS NOT NULL)
                AND {customer} IS NOT NULL AND {id} > $1
              ORDER BY {id} LIMIT $2"
        );
        let update = format!(
            "UPDATE {table} t SET {a} = u.a, {b} = u.b, sealed = u.sealed
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::boolean[])
                 AS u(id, a, b, sealed)
              WHERE t.{id} = u.id AND NOT t.sealed"
        );
        type Row = (Uuid, Uuid, Option<String>, Option<String>);
        let mut after = Uuid::nil();
        loop {
            let rows: Vec<Row> = sqlx::query_as(&select)
                .bind(after)
                .bind(BATCH)
                .fetch_all(&self.pool)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(done);
            };
            after = last.0;
            let mut customers: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
            customers.sort_unstable();
            customers.dedup();
            let states = self.states(&customers).await?;
            let mut out: Vec<(Uuid, Option<String>, Option<String>, bool)> = Vec::new();
            for (row, customer, mut x, mut y) in rows {
                match states.get(&customer) {
                    Some(state @ KeyState::Key(_)) => {
                        state.seal_in_place(customer, a, &mut x);
                        state.seal_in_place(customer, b, &mut y);
                        out.push((row, x, y, true));
                        done.sealed += 1;
                    }
                    Some(KeyState::Erased) => {
                        out.push((row, None, None, false));
                        done.withheld += 1;
                    }
                    _ => {}
                }
            }
            sqlx::query(&update)
                .bind(out.iter().map(|o| o.0).collect::<Vec<_>>())
                .bind(out.iter().map(|o| o.1.clone()).collect::<Vec<_>>())
                .bind(out.iter().map(|o| o.2.clone()).collect::<Vec<_>>())
                .bind(out.iter().map(|o| o.3).collect::<Vec<_>>())
                .execute(&self.pool)
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::seal::DataKey;
    use super::*;

    #[test]
    fn a_sealed_column_opens_only_with_its_key_for_its_customer_and_field() {
        let customer = Uuid::now_v7();
        let key = KeyState::Key(DataKey::generate());
        let sealed = key.seal_text(customer, "email", "ada@example.com").unwrap();
        assert!(!sealed.contains("ada"), "{sealed}");
        assert_eq!(
            key.open_text(customer, "email", &sealed).as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(key.open_text(customer, "name", &sealed), None);
        assert_eq!(key.open_text(Uuid::now_v7(), "email", &sealed), None);
        let other = KeyState::Key(DataKey::generate());
        assert_eq!(other.open_text(customer, "email", &sealed), None);
        for state in [KeyState::None, KeyState::Erased, KeyState::Unreadable] {
            assert_eq!(state.seal_text(customer, "email", "ada@example.com"), None);
            assert_eq!(state.open_text(customer, "email", &sealed), None);
        }
    }
}

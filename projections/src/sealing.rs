//! Sealing what the customer read model still holds in clear (`ordo privacy migrate`, ADR
//! 0020): rows projected while encryption was off, or before read models kept personal
//! values sealed. Each is sealed with its customer's data key; an erased customer's clear
//! values are dropped (the read model drops them on `customer.erased` anyway); a customer
//! without a key keeps them (`ordo privacy migrate` gives every registered customer a key
//! first). The live runner seals any clear row it rewrites as well ([`crate::customers`]).

use ordo_commands::privacy::{Keyring, RowsSealed, SealedColumns};

/// The live customer table's personal columns.
const CUSTOMERS: SealedColumns<'static> = SealedColumns {
    table: "projections.customers",
    id: "id",
    customer: "id",
    fields: ["email", "name"],
};

/// Seal every clear row of the live customer read model whose customer has a data key.
/// Idempotent; without a master key (encryption off) it does nothing.
pub async fn seal_customers(keys: &Keyring) -> Result<RowsSealed, sqlx::Error> {
    keys.seal_rows(&CUSTOMERS).await
}

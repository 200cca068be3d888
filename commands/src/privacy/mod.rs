//! Crypto-shredding of customers' personal data (ADR 0020).
//!
//! Every customer gets a random data key the first time an event with their personal data
//! is written; the command path seals the event's personal fields
//! ([`ordo_domain::personal::personal_fields`]) with it before the append, so the hash chain
//! covers the ciphertext. The data key is stored only wrapped by a master key that is not in
//! the database ([`MasterKeys`]). Erasing a customer deletes the wrapped key; the sealed
//! fields in the log can then never be read again, while the rows (and the chain over them)
//! stay as they were.
//!
//! Readers open what they may through a [`Keyring`]: the audit trail shows `"[erased]"` in
//! place of every personal field of an erased customer (also the clear fields of events
//! written before encryption). The read models and workers keep personal values sealed with
//! the same data key ([`KeyState::seal_text`]) and open them on authorized reads; clear
//! text stays only where encryption is off, and leaves on `customer.erased`.

mod columns;
mod erase;
mod keys;
mod master;
mod migrate;
mod open;
mod seal;

pub use columns::{RowsSealed, SealedColumns};
pub use keys::{KeyState, Keyring, PrivacyError};
pub use master::{MasterKey, MasterKeys};
pub use migrate::{migrate, reindex_emails, MigrationReport};
pub use seal::{open_fields, seal_fields, DataKey, Mode};

//! `ordo privacy migrate`: bring customers registered before encryption under it.
//!
//! Here: a data key for every registered customer who has none ([`create_keys`]), the
//! e-mail blind index ([`reindex_emails`]), and the count of events stored in clear. The
//! read models and workers then seal the rows they still hold in clear with those keys
//! (`ordo_projections::sealing`, `ordo_workers::notification::sealing`; the CLI runs them
//! after this), so that a later erasure shreds a customer's read-model data too, whenever
//! they registered.

use serde_json::Value;
use uuid::Uuid;

use super::seal::Mode;
use super::Keyring;

/// `customer.registered` events read per batch by [`reindex_emails`].
const REINDEX_BATCH: i64 = 500;

/// What a migration did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Customers registered before encryption who were given a data key now.
    pub keys_created: u64,
    /// Customers whose clear e-mail (from their `customer.registered`) was blind-indexed.
    pub indexed: u64,
    /// Stored events with at least one personal field in clear.
    pub clear_events: i64,
    /// Of those, the events of erased customers: they are masked on every read, and their
    /// rows cannot change without breaking the hash chain.
    pub clear_events_of_erased: i64,
}

/// Give every registered customer without one a data key ([`create_keys`]), index the
/// e-mail of every customer who is neither indexed under the current master key nor erased
/// ([`reindex_emails`]), and count the events stored with clear personal fields.
pub async fn migrate(keys: &Keyring) -> Result<MigrationReport, super::PrivacyError> {
    let mut report = MigrationReport {
        keys_created: create_keys(keys).await?,
        indexed: reindex_emails(keys).await?,
        ..MigrationReport::default()
    };
    let (clear, erased): (i64, i64) =
        sqlx::query_as(include_str!("../sql/clear_personal_events.sql"))
            .fetch_one(keys.pool())
            .await?;
    report.clear_events = clear;
    report.clear_events_of_erased = erased;
    Ok(report)
}

/// Give a data key to every customer with a `customer.registered` event and no key row
/// (registered before encryption, so nothing of theirs was sealed): their read-model rows
/// can then be sealed, and erasing them destroys a key that those rows need. Their events
/// stay clear (rows of the chained log cannot change). Returns how many keys were created;
/// without a master key, does nothing.
pub async fn create_keys(keys: &Keyring) -> Result<u64, super::PrivacyError> {
    if !keys.encrypts() {
        return Ok(0);
    }
    let mut created = 0;
    let mut after = 0_i64;
    loop {
        let batch: Vec<(i64, String)> = sqlx::query_as(
            "SELECT e.global_position, e.aggregate_id FROM event_store.events e
              WHERE e.event_type = 'customer.registered' AND e.global_position > $1
                AND NOT EXISTS (SELECT 1 FROM privacy.customer_keys k
                                 WHERE k.customer_id::text = e.aggregate_id)
              ORDER BY e.global_position LIMIT $2",
        )
        .bind(after)
        .bind(REINDEX_BATCH)
        .fetch_all(keys.pool())
        .await?;
        let Some((last, _)) = batch.last() else {
            return Ok(created);
        };
        after = *last;
        for (_, customer) in batch {
            let Ok(customer) = customer.parse::<Uuid>() else {
                continue;
            };
            match keys.key_for_writing(customer).await {
                Ok(Some(_)) => created += 1,
                // Erased meanwhile: no key to give.
                Ok(None) | Err(super::PrivacyError::Erased) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Blind-index, under the current master key, the e-mail of every customer not indexed under
/// it yet and not erased: a sealed address is opened with the customer's data key, a clear
/// one (registered before encryption) is taken as it is. Then drop the index entries under
/// older master keys of every customer indexed under the current one, so that an older key
/// can be retired (removed from `ORDO_PREVIOUS_MASTER_KEYS`) without losing lookups by
/// e-mail. Returns how many customers were indexed. Without a master key, does nothing.
pub async fn reindex_emails(keys: &Keyring) -> Result<u64, super::PrivacyError> {
    let Some(version) = keys.master_version() else {
        return Ok(0);
    };
    let mut indexed = 0;
    let mut after = 0_i64;
    loop {
        let batch: Vec<(i64, String, Value)> = sqlx::query_as(
            "SELECT e.global_position, e.aggregate_id, e.payload FROM event_store.events e
              WHERE e.event_type = 'customer.registered' AND e.global_position > $2
                AND NOT EXISTS (SELECT 1 FROM privacy.email_index i
                                 WHERE i.customer_id::text = e.aggregate_id AND i.master_version = $1)
                AND NOT EXISTS (SELECT 1 FROM privacy.customer_keys k
                                 WHERE k.customer_id::text = e.aggregate_id AND k.erased_at IS NOT NULL)
              ORDER BY e.global_position LIMIT $3",
        )
        .bind(version)
        .bind(after)
        .bind(REINDEX_BATCH)
        .fetch_all(keys.pool())
        .await?;
        let Some((last, _, _)) = batch.last() else {
            break;
        };
        after = *last;
        for (_, customer, mut payload) in batch {
            let Ok(customer) = customer.parse::<Uuid>() else {
                continue;
            };
            keys.open(
                &mut [(ordo_domain::event::types::CUSTOMER_REGISTERED, &mut payload)],
                Mode::Fold,
            )
            .await?;
            // Still sealed: its data key was wrapped by a master key not given (or erased
            // meanwhile); it keeps whatever index it had.
            if let Some(email) = payload.get("email").and_then(Value::as_str) {
                keys.index_email(customer, email).await?;
                indexed += 1;
            }
        }
    }
    sqlx::query(
        "DELETE FROM privacy.email_index old WHERE old.master_version <> $1
            AND EXISTS (SELECT 1 FROM privacy.email_index cur
                         WHERE cur.customer_id = old.customer_id AND cur.master_version = $1)",
    )
    .bind(version)
    .execute(keys.pool())
    .await?;
    Ok(indexed)
}

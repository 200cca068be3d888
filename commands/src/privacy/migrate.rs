//! `ordo privacy migrate`: bring customers registered before encryption under it.

use super::Keyring;

/// What a migration did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Customers whose clear e-mail (from their `customer.registered`) was blind-indexed.
    pub indexed: u64,
    /// Stored events with at least one personal field in clear.
    pub clear_events: i64,
    /// Of those, the events of erased customers: they are masked on every read, and their
    /// rows cannot change without breaking the hash chain.
    pub clear_events_of_erased: i64,
}

/// Index the e-mail of every customer registered in clear who is neither indexed under the
/// current master key nor erased, and count the events stored with clear personal fields.
pub async fn migrate(keys: &Keyring) -> Result<MigrationReport, super::PrivacyError> {
    let mut report = MigrationReport::default();
    if let Some(version) = keys.master_version() {
        let clear: Vec<(String, String)> = sqlx::query_as(
            "SELECT e.aggregate_id, e.payload ->> 'email' FROM event_store.events e
              WHERE e.event_type = 'customer.registered' AND jsonb_typeof(e.payload -> 'email') = 'string'
                AND NOT EXISTS (SELECT 1 FROM privacy.email_index i
                                 WHERE i.customer_id::text = e.aggregate_id AND i.master_version = $1)
                AND NOT EXISTS (SELECT 1 FROM privacy.customer_keys k
                                 WHERE k.customer_id::text = e.aggregate_id AND k.erased_at IS NOT NULL)",
        )
        .bind(version)
        .fetch_all(keys.pool())
        .await?;
        for (customer, email) in clear {
            if let Ok(customer) = customer.parse() {
                keys.index_email(customer, &email).await?;
                report.indexed += 1;
            }
        }
    }
    let (clear, erased): (i64, i64) =
        sqlx::query_as(include_str!("../sql/clear_personal_events.sql"))
            .fetch_one(keys.pool())
            .await?;
    report.clear_events = clear;
    report.clear_events_of_erased = erased;
    Ok(report)
}

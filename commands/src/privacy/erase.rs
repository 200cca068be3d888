//! Destroying keys: erasure, and re-wrapping after a master key rotation.

use uuid::Uuid;

use super::keys::PrivacyError;
use super::Keyring;

impl Keyring {
    /// Destroy the customer's data key and e-mail index, and mark them erased (also when they
    /// never had a key: their clear fields are then masked on read). Idempotent.
    pub async fn erase(&self, customer: Uuid) -> Result<(), sqlx::Error> {
        self.forget_sealing_key(customer);
        let mut tx = crate::db::begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO privacy.customer_keys (customer_id, erased_at) VALUES ($1, now())
             ON CONFLICT (customer_id) DO UPDATE
                SET wrapped_key = NULL, master_version = NULL,
                    erased_at = coalesce(privacy.customer_keys.erased_at, now())",
        )
        .bind(customer)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM privacy.email_index WHERE customer_id = $1")
            .bind(customer)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Re-wrap every data key wrapped by an older master key with the current one, so the
    /// older key can be retired. Returns how many keys were re-wrapped.
    pub async fn rewrap(&self) -> Result<u64, PrivacyError> {
        let Some(master) = &self.master else {
            return Ok(0);
        };
        let current = master.current();
        let rows: Vec<(Uuid, Vec<u8>, i32)> = sqlx::query_as(
            "SELECT customer_id, wrapped_key, master_version FROM privacy.customer_keys
              WHERE wrapped_key IS NOT NULL AND master_version <> $1",
        )
        .bind(current.version())
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for (customer, wrapped, version) in rows {
            let key = master
                .get(version)
                .and_then(|k| k.unwrap(customer, &wrapped))
                .ok_or(PrivacyError::UnknownMasterKey(customer, version))?;
            // Only if it was not erased or re-wrapped meanwhile.
            done += sqlx::query(
                "UPDATE privacy.customer_keys SET wrapped_key = $2, master_version = $3
                  WHERE customer_id = $1 AND master_version = $4",
            )
            .bind(customer)
            .bind(current.wrap(customer, &key))
            .bind(current.version())
            .bind(version)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(done)
    }
}

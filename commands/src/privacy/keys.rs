//! The key store: customers' data keys, wrapped, in `privacy.customer_keys`; the e-mail
//! blind index in `privacy.email_index`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::master::MasterKeys;
use super::seal::{customer_of, seal_fields, DataKey};

/// What a reader can do with a customer's personal fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The customer has no key (nothing of theirs was sealed) and is not erased.
    None,
    /// Their data key, unwrapped.
    Key(DataKey),
    /// Erased: the key is destroyed, and clear fields are withheld too.
    Erased,
    /// The key was wrapped by a master key this process was not given.
    Unreadable,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The customer was erased: nothing personal of theirs may be written any more.
    #[error("the customer's personal data was erased")]
    Erased,
    /// The customer's key was wrapped by a master key this process was not given.
    #[error("the data key of customer {0} was wrapped by master key version {1}, which is not configured (ORDO_PREVIOUS_MASTER_KEYS)")]
    UnknownMasterKey(Uuid, i32),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The master keys (if given) and the key store's tables. Cheap to clone.
///
/// Without master keys, encryption of new personal data is off: events are written in
/// clear as before; erasure still destroys any key and masks the customer's fields on read.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub(super) pool: PgPool,
    pub(super) master: Option<Arc<MasterKeys>>,
    /// The data keys this process sealed with, unwrapped: a customer's second command seals
    /// without reading the key store. Whether the customer was erased meanwhile is checked
    /// by the appender under the commit point, for every append ([`Keyring::seal_for_append`]).
    sealing: Arc<Mutex<HashMap<Uuid, DataKey>>>,
}

/// Above this many cached data keys the cache starts over.
const SEALING_KEYS: usize = 100_000;

type KeyRow = (Uuid, Option<Vec<u8>>, Option<i32>, bool);

impl Keyring {
    pub fn new(pool: PgPool, master: Option<MasterKeys>) -> Self {
        Self {
            pool,
            master: master.map(Arc::new),
            sealing: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether new personal data is sealed (a master key is configured).
    pub fn encrypts(&self) -> bool {
        self.master.is_some()
    }

    /// The current master key's version, when one is configured.
    pub fn master_version(&self) -> Option<i32> {
        self.master.as_ref().map(|m| m.current().version())
    }

    /// Seal the personal fields of events about to be appended, creating the customer's key
    /// on first use. Events of a `customer.registered` type also record the e-mail's blind
    /// index. Returns the customers whose personal data the events carry: the append must be
    /// refused if any of them is erased, which the appender checks under the commit point
    /// (so no erasure can slip between the check and the commit). A customer known erased
    /// here is refused at once.
    pub async fn seal_for_append(
        &self,
        events: &mut [(&str, &mut Value)],
    ) -> Result<Vec<Uuid>, PrivacyError> {
        let mut owners = Vec::new();
        for (event_type, payload) in events.iter_mut() {
            let Some(customer) = customer_of(event_type, payload) else {
                continue;
            };
            owners.push(customer);
            let Some(key) = self.key_for_writing(customer).await? else {
                continue;
            };
            if *event_type == ordo_domain::event::types::CUSTOMER_REGISTERED {
                if let Some(email) = payload.get("email").and_then(Value::as_str) {
                    self.index_email(customer, email).await?;
                }
            }
            seal_fields(event_type, payload, customer, &key);
        }
        owners.sort_unstable();
        owners.dedup();
        Ok(owners)
    }

    /// The customer's data key for sealing (created if missing); `None` when encryption is
    /// off, without reading anything: the appender checks erasure.
    pub(super) async fn key_for_writing(
        &self,
        customer: Uuid,
    ) -> Result<Option<DataKey>, PrivacyError> {
        let Some(master) = &self.master else {
            return Ok(None);
        };
        let cached = || self.sealing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = cached().get(&customer) {
            return Ok(Some(key.clone()));
        }
        let key = self.stored_key_for_writing(customer, master).await?;
        let mut cache = cached();
        if cache.len() >= SEALING_KEYS {
            cache.clear();
        }
        cache.insert(customer, key.clone());
        Ok(Some(key))
    }

    /// Forget a customer's cached data key (their erasure destroys the stored one).
    pub(super) fn forget_sealing_key(&self, customer: Uuid) {
        self.sealing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&customer);
    }

    async fn stored_key_for_writing(
        &self,
        customer: Uuid,
        master: &MasterKeys,
    ) -> Result<DataKey, PrivacyError> {
        let row = self.row(customer).await?;
        if row.as_ref().is_some_and(|r| r.3) {
            return Err(PrivacyError::Erased);
        }
        if let Some((_, Some(wrapped), Some(version), _)) = &row {
            let key = master
                .get(*version)
                .ok_or(PrivacyError::UnknownMasterKey(customer, *version))?;
            return key
                .unwrap(customer, wrapped)
                .ok_or(PrivacyError::UnknownMasterKey(customer, *version));
        }
        let fresh = DataKey::generate();
        let current = master.current();
        sqlx::query(
            "INSERT INTO privacy.customer_keys (customer_id, wrapped_key, master_version)
             VALUES ($1, $2, $3) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(customer)
        .bind(current.wrap(customer, &fresh))
        .bind(current.version())
        .execute(&self.pool)
        .await?;
        // Another command may have created it first: use whichever key is stored.
        self.key_for_writing_existing(customer).await
    }

    async fn key_for_writing_existing(&self, customer: Uuid) -> Result<DataKey, PrivacyError> {
        match self.states(&[customer]).await?.remove(&customer) {
            Some(KeyState::Key(key)) => Ok(key),
            Some(KeyState::Erased) => Err(PrivacyError::Erased),
            _ => Err(PrivacyError::UnknownMasterKey(customer, 0)),
        }
    }

    async fn row(&self, customer: Uuid) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT customer_id, wrapped_key, master_version, erased_at IS NOT NULL
               FROM privacy.customer_keys WHERE customer_id = $1",
        )
        .bind(customer)
        .fetch_optional(&self.pool)
        .await
    }

    /// Record the blind index of a customer's e-mail under the current master key.
    pub(super) async fn index_email(&self, customer: Uuid, email: &str) -> Result<(), sqlx::Error> {
        let Some(master) = &self.master else {
            return Ok(());
        };
        let current = master.current();
        sqlx::query(
            "INSERT INTO privacy.email_index (customer_id, master_version, digest)
             VALUES ($1, $2, $3)
             ON CONFLICT (customer_id, master_version) DO UPDATE SET digest = EXCLUDED.digest",
        )
        .bind(customer)
        .bind(current.version())
        .bind(current.email_digest(email))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The customers whose e-mail has this blind index under any configured master key;
    /// `None` when encryption is off (lookups then compare the read model's clear text).
    pub async fn customers_by_email(&self, email: &str) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
        let Some(master) = &self.master else {
            return Ok(None);
        };
        let digests: Vec<Vec<u8>> = master.all().map(|k| k.email_digest(email)).collect();
        let ids = sqlx::query_scalar(
            "SELECT DISTINCT customer_id FROM privacy.email_index WHERE digest = ANY($1)",
        )
        .bind(digests)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(ids))
    }

    /// The key state of each customer (customers without a row are `KeyState::None`).
    pub async fn states(&self, customers: &[Uuid]) -> Result<HashMap<Uuid, KeyState>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.states_on(&mut conn, customers).await
    }

    /// [`Keyring::states`] on a connection (or transaction) the caller holds.
    pub async fn states_on(
        &self,
        conn: &mut PgConnection,
        customers: &[Uuid],
    ) -> Result<HashMap<Uuid, KeyState>, sqlx::Error> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT customer_id, wrapped_key, master_version, erased_at IS NOT NULL
               FROM privacy.customer_keys WHERE customer_id = ANY($1)",
        )
        .bind(customers)
        .fetch_all(conn)
        .await?;
        let mut states: HashMap<Uuid, KeyState> =
            customers.iter().map(|c| (*c, KeyState::None)).collect();
        for (customer, wrapped, version, erased) in rows {
            let state = match (erased, wrapped, version, &self.master) {
                (true, _, _, _) => KeyState::Erased,
                (false, Some(wrapped), Some(version), Some(master)) => master
                    .get(version)
                    .and_then(|k| k.unwrap(customer, &wrapped))
                    .map_or(KeyState::Unreadable, KeyState::Key),
                (false, Some(_), _, None) => KeyState::Unreadable,
                _ => KeyState::None,
            };
            states.insert(customer, state);
        }
        Ok(states)
    }
}

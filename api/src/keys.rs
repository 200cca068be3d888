//! API keys as data: create (the key is shown once, only its hash is kept), list, revoke.
//! A revocation is announced on [`REVOKED_CHANNEL`] and every process's
//! [`KeyCache`](crate::KeyCache) forgets the key when it hears it — within a second, not
//! when a cache entry expires.

use std::sync::Weak;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{hash_key, CacheInner};
use crate::Role;

/// The channel a revocation is announced on; the payload is the key's id.
pub const REVOKED_CHANNEL: &str = "ordo_key_revoked";

/// A key as listed: never the key itself, which is not stored.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    /// `storefront`, `support`, `analyst` or `admin`.
    pub role: String,
    /// The channel it is scoped to; `null`: global (every channel).
    pub channel: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it was revoked; `null` while it works.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: the only time the key is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// The channel it is scoped to; `null`: global (every channel).
    pub channel: Option<String>,
    /// Send as `Authorization: Bearer <key>`. Shown once: only its hash is stored.
    pub key: String,
}

/// The channel a new key of `role` gets when none is named: storefront keys always belong
/// to one channel (`default`); the other roles' keys are global.
pub fn default_channel(role: Role) -> Option<&'static str> {
    (role == Role::Storefront).then_some(ordo_commands::channels::DEFAULT)
}

/// Create a key for `role` in `channel` (`None`: [`default_channel`]); the channel must
/// exist (a foreign-key violation otherwise).
pub async fn create(
    pool: &PgPool,
    role: Role,
    name: &str,
    channel: Option<&str>,
) -> Result<CreatedKey, sqlx::Error> {
    let channel = channel.or(default_channel(role));
    let key = format!(
        "ordo_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO auth.api_keys (id, name, role, key_hash, channel) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_key(&key))
    .bind(channel)
    .execute(pool)
    .await?;
    Ok(CreatedKey {
        id,
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        channel: channel.map(str::to_owned),
        key,
    })
}

/// Every key, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, role, channel, created_at, revoked_at FROM auth.api_keys
          ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
}

/// Revoke key `id` and announce it; `None` if no key has this id. Revoking a revoked key
/// changes nothing (its first revocation time stays) and is announced again.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<Option<KeyInfo>, sqlx::Error> {
    let mut tx = ordo_commands::db::begin(pool).await?;
    let revoked: Option<KeyInfo> = sqlx::query_as(
        "UPDATE auth.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING id, name, role, channel, created_at, revoked_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if revoked.is_some() {
        // Delivered at commit, when the revocation is visible to the lookups it triggers.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REVOKED_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(revoked)
}

/// Announce that key `id` was revoked (by a statement of the caller's own, already
/// committed), so that every process forgets it at once.
pub async fn announce_revoked(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVOKED_CHANNEL)
        .bind(id.to_string())
        .execute(pool)
        .await
        .map(|_| ())
}

/// The process's revocation listener: forgets revoked keys in `cache`; ends once the cache
/// is gone. While it is not connected the cache trusts known keys for a second only.
pub(crate) async fn listen(cache: Weak<CacheInner>, pool: PgPool) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(REVOKED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for key revocations; keys are re-checked every second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        match cache.upgrade() {
            Some(cache) => cache.set_listening(true),
            None => return,
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    let Some(cache) = cache.upgrade() else { return };
                    match Uuid::parse_str(notification.payload()) {
                        Ok(id) => cache.forget(id),
                        Err(_) => cache.set_listening(true),
                    }
                }
                Err(_) if cache.strong_count() == 0 => return,
                Err(_) => {}
                Ok(Ok(None)) | Ok(Err(_)) => {
                    if let Some(cache) = cache.upgrade() {
                        cache.set_listening(false);
                    }
                    break;
                }
            }
        }
    }
}

//! API keys (one role each, stored hashed) and the per-route role policies.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Storefront,
    Support,
    Analyst,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Storefront, Role::Support, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storefront => "storefront",
            Self::Support => "support",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`: one of storefront, support, analyst, admin")
            })
    }
}

/// A role by its name, as `FromStr` reads it (a request body's `role`).
impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The authenticated API key behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The sales channel the key is scoped to; `None`: a global key (see [`Caller::scope`]).
    pub channel: Option<String>,
}

pub(crate) fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Create a key for `role` and return it; only its hash is stored. A storefront key
/// belongs to the `default` channel, any other is global.
pub async fn create_key(pool: &PgPool, role: Role, name: &str) -> Result<String, sqlx::Error> {
    create_key_in(pool, role, name, None).await
}

/// Create a key for `role` scoped to `channel` (`None`: the role's default — `default` for
/// storefront keys, global for the others) and return it. The channel must exist.
pub async fn create_key_in(
    pool: &PgPool,
    role: Role,
    name: &str,
    channel: Option<&str>,
) -> Result<String, sqlx::Error> {
    crate::keys::create(pool, role, name, channel)
        .await
        .map(|created| created.key)
}

/// A key's hash → who it is (`None`: no such key, or revoked) and when that was looked up.
type KeyEntries = HashMap<Vec<u8>, (Option<Caller>, Instant)>;

/// Looked-up keys, kept briefly so that a busy client does not cost a query per request —
/// and unknown keys too, so that a client retrying a bad key does not either. A revocation
/// reaches every process's cache at once through a notification
/// ([`crate::keys::REVOKED_CHANNEL`]); while this process cannot listen for them, known keys
/// are kept for a second only.
#[derive(Clone, Default)]
pub struct KeyCache {
    inner: Arc<CacheInner>,
}

#[derive(Default)]
pub(crate) struct CacheInner {
    entries: RwLock<KeyEntries>,
    /// Whether revocations are being heard right now.
    listening: AtomicBool,
    listener: OnceLock<()>,
}

/// How long a known key is trusted while revocations are heard.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a known key is trusted while they are not.
const UNHEARD_KEY_TTL: Duration = Duration::from_secs(1);
/// How long an unknown key is remembered as unknown.
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(5);
/// Above this many entries the cache starts over.
const MAX_ENTRIES: usize = 10_000;

impl KeyCache {
    /// Forget `key_id` (revoked here): its next request is looked up, and refused.
    pub(crate) fn forget(&self, key_id: Uuid) {
        self.inner.forget(key_id);
    }

    /// The cached answer for `key` while it is fresh: `Some(None)` for a key known not to
    /// work.
    fn cached(&self, hash: &[u8]) -> Option<Option<Caller>> {
        let entries = self.inner.entries.read().ok()?;
        let (caller, at) = entries.get(hash)?;
        let ttl = match caller {
            None => UNKNOWN_KEY_TTL,
            Some(_) if self.inner.listening.load(Ordering::Acquire) => KEY_CACHE_TTL,
            Some(_) => UNHEARD_KEY_TTL,
        };
        (at.elapsed() < ttl).then(|| caller.clone())
    }

    /// Whether `key` worked here lately (within twice [`KEY_CACHE_TTL`]): such a key is not
    /// held to the anonymous per-address quota, even when it must be looked up again before
    /// it is trusted (which `cached` decides).
    pub fn knows(&self, key: &str) -> bool {
        let Ok(entries) = self.inner.entries.read() else {
            return false;
        };
        matches!(entries.get(&hash_key(key)), Some((Some(_), at)) if at.elapsed() < 2 * KEY_CACHE_TTL)
    }

    async fn lookup(&self, pool: &PgPool, key: &str) -> Result<Option<Caller>, ApiError> {
        self.inner.listener.get_or_init(|| {
            tokio::spawn(crate::keys::listen(
                Arc::downgrade(&self.inner),
                pool.clone(),
            ));
        });
        let hash = hash_key(key);
        if let Some(caller) = self.cached(&hash) {
            return Ok(caller);
        }
        let row: Option<(Uuid, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, name, role, channel FROM auth.api_keys
              WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await?;
        let caller = match row {
            Some((key_id, name, role, channel)) => {
                let role = Role::from_str(&role).map_err(ApiError::Internal)?;
                Some(Caller {
                    key_id,
                    name,
                    role,
                    channel,
                })
            }
            None => None,
        };
        if let Ok(mut entries) = self.inner.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(hash, (caller.clone(), Instant::now()));
        }
        Ok(caller)
    }
}

impl CacheInner {
    /// Revocations are heard (again) or not; either way what was cached before may be stale.
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        // Every working key is looked up again before it is trusted (a revocation may have
        // gone unheard), but stays known to the anonymous limiter (see `knows`).
        let expired = Instant::now().checked_sub(KEY_CACHE_TTL);
        if let (Ok(mut entries), Some(expired)) = (self.entries.write(), expired) {
            for (caller, at) in entries.values_mut() {
                if caller.is_some() {
                    *at = (*at).min(expired);
                }
            }
        }
    }

    /// Forget `key_id` (revoked): its next request is looked up, and refused.
    pub(crate) fn forget(&self, key_id: Uuid) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, (caller, _)| caller.as_ref().is_none_or(|c| c.key_id != key_id));
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The rate limiter authenticated this request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Self::authenticate(parts, state).await
    }
}

impl Caller {
    /// The channel this caller's reads and commands are confined to: its key's channel, or
    /// `None` for a global key, which sees every channel.
    pub fn scope(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// Whether this caller sees resources of `channel`.
    pub fn sees(&self, channel: &str) -> bool {
        self.scope().is_none_or(|scope| scope == channel)
    }

    /// The key in `Authorization: Bearer <key>`; 401 without a known, unrevoked one.
    pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized)?;
        state
            .keys
            .lookup(&state.pool, key)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The API key a request presents, if it presents one of a plausible size.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .filter(|k| !k.is_empty() && k.len() <= 256)
}

/// Which roles a route admits (the matrix in docs/API.md).
pub trait Policy: Send + Sync + 'static {
    const ROLES: &'static [Role];
    /// Whether what it guards spans channels (keys, workers, webhooks, rebuilds): then the
    /// console admits global keys only, as the API's [`Global`] does.
    const SPANS_CHANNELS: bool = false;

    /// Whether `role` is one of [`Self::ROLES`], for a route whose policy depends on its
    /// parameters.
    fn admits(role: Role) -> bool {
        Self::ROLES.contains(&role)
    }
}

/// An authenticated caller with a global key (one scoped to no channel) whose role `P`
/// admits: for what spans channels (keys, channels, webhooks, workers, dead letters).
/// 401 without a valid key, 403 otherwise.
pub struct Global<P: Policy>(pub Caller, pub PhantomData<P>);

impl<P: Policy> FromRequestParts<AppState> for Global<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Allowed(caller, _) = Allowed::<P>::from_request_parts(parts, state).await?;
        match &caller.channel {
            None => Ok(Self(caller, PhantomData)),
            Some(_) => Err(ApiError::ChannelScoped),
        }
    }
}

/// An authenticated caller whose role `P` admits; 401 without a valid key, 403 otherwise.
pub struct Allowed<P: Policy>(pub Caller, pub PhantomData<P>);

impl<P: Policy> FromRequestParts<AppState> for Allowed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if P::ROLES.contains(&caller.role) {
            Ok(Self(caller, PhantomData))
        } else {
            Err(ApiError::Forbidden {
                role: caller.role.as_str(),
            })
        }
    }
}

macro_rules! policy {
    ($(#[$doc:meta])* $name:ident: $($role:ident),+) => {
        $(#[$doc])*
        pub struct $name;
        impl Policy for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
        }
    };
    ($(#[$doc:meta])* spanning $name:ident: $($role:ident),+) => {
        $(#[$doc])*
        pub struct $name;
        impl Policy for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
            const SPANS_CHANNELS: bool = true;
        }
    };
}

policy!(
    /// Commands on orders, payments and customers.
    Commands: Storefront, Admin
);
policy!(
    /// Cancelling an order: storefronts, and support on a customer's behalf.
    Cancel: Storefront, Support, Admin
);
policy!(
    /// Support notes on customers.
    Notes: Support, Admin
);
policy!(
    /// Erasing a customer's personal data: admins only. It cannot be undone, so support
    /// (who takes the customer's request) asks an admin to run it.
    Erasers: Admin
);
policy!(
    /// Read models.
    Readers: Storefront, Support, Analyst, Admin
);
policy!(
    /// The audit trail: history and state at a point.
    Auditors: Support, Admin
);
policy!(
    /// Projection status: analysts, support (all reads) and admins.
    ProjectionReaders: Support, Analyst, Admin
);
policy!(
    /// Rebuilding a projection.
    spanning Rebuilders: Analyst, Admin
);
policy!(
    /// Analytics: analysts and admins.
    Analysts: Analyst, Admin
);
policy!(
    /// The whole customer list (the CRM): support and admins. Others look customers up by
    /// exact e-mail only.
    CustomerListers: Support, Admin
);
policy!(
    /// Notifications sent or recorded: support and admins.
    NotificationReaders: Support, Admin
);
policy!(
    /// Workers, dead letters, keys, channels: admins only.
    spanning Admins: Admin
);
policy!(
    /// Webhook endpoints: admins only.
    spanning WebhookAdmins: Admin
);

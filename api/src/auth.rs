//! API keys (one role each, stored hashed) and the per-route role policies.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
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

/// The authenticated API key behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: Uuid,
    pub name: String,
    pub role: Role,
}

fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Create a key for `role` and return it; only its hash is stored.
pub async fn create_key(pool: &PgPool, role: Role, name: &str) -> Result<String, sqlx::Error> {
    let secret = format!(
        "ordo_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    sqlx::query("INSERT INTO auth.api_keys (id, name, role, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(role.as_str())
        .bind(hash_key(&secret))
        .execute(pool)
        .await?;
    Ok(secret)
}

/// A key's hash → who it is and when that was looked up.
type KeyEntries = HashMap<Vec<u8>, (Caller, Instant)>;

/// Looked-up keys, kept briefly so that a busy client does not cost a query per request.
#[derive(Clone, Default)]
pub struct KeyCache {
    entries: Arc<RwLock<KeyEntries>>,
}

const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

impl KeyCache {
    async fn lookup(&self, pool: &PgPool, key: &str) -> Result<Option<Caller>, ApiError> {
        let hash = hash_key(key);
        if let Ok(entries) = self.entries.read() {
            if let Some((caller, at)) = entries.get(&hash) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(Some(caller.clone()));
                }
            }
        }
        let row: Option<(Uuid, String, String)> = sqlx::query_as(
            "SELECT id, name, role FROM auth.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await?;
        let Some((key_id, name, role)) = row else {
            return Ok(None);
        };
        let role = Role::from_str(&role).map_err(ApiError::Internal)?;
        let caller = Caller { key_id, name, role };
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (caller.clone(), Instant::now()));
        }
        Ok(Some(caller))
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
    /// The key in `Authorization: Bearer <key>`; 401 without a known, unrevoked one.
    pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or(ApiError::Unauthorized)?;
        state
            .keys
            .lookup(&state.pool, key)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

/// Which roles a route admits (the matrix in docs/API.md).
pub trait Policy: Send + Sync + 'static {
    const ROLES: &'static [Role];
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
    Rebuilders: Analyst, Admin
);
policy!(
    /// Analytics: analysts and admins.
    Analysts: Analyst, Admin
);
policy!(
    /// Notifications sent or recorded: support and admins.
    NotificationReaders: Support, Admin
);
policy!(
    /// Workers, dead letters, keys: admins only.
    Admins: Admin
);
policy!(
    /// Webhook endpoints: admins only.
    WebhookAdmins: Admin
);

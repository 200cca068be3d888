//! Console sessions: an API key pasted once becomes a server-side session in
//! `console.sessions`, named by an `HttpOnly`, `SameSite=Strict` cookie. A session acts with
//! its key's role through the API's own [`Policy`] types, so the console shows and allows
//! exactly what the key could do through `/v1`.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, USER_AGENT};
use axum::http::request::Parts;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::ConsoleError;
use crate::auth::{Policy, Role};
use crate::{AppState, Caller};

/// The cookie naming a session.
pub const SESSION_COOKIE: &str = "ordo_console";
/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub const SIGNIN_COOKIE: &str = "ordo_console_signin";
/// How long a session lasts from sign-in, whatever its activity.
pub const SESSION_TTL: TimeDelta = TimeDelta::hours(8);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub caller: Caller,
    /// Every form of this session carries it back; see [`Session::check_csrf`].
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// Whether the API policy `P` admits this session's role.
    pub fn may<P: Policy>(&self) -> bool {
        P::ROLES.contains(&self.caller.role)
            && (!P::SPANS_CHANNELS || self.caller.scope().is_none())
    }

    /// 403 unless the form's `csrf` field is this session's token.
    pub fn check_csrf(&self, form: &super::Form) -> Result<(), ConsoleError> {
        match form.get("csrf") {
            Some(token) if same(token.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(ConsoleError::Csrf),
        }
    }
}

/// Constant-time comparison, so that a token cannot be guessed byte by byte from timings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh 256-bit random token, as 64 hex digits.
pub fn random_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, scoped to `/console`; `Secure` when
/// configured (the console is served over TLS, directly or behind a proxy).
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// Record a session for `caller`; returns the token for the cookie (shown nowhere else).
pub async fn create(
    pool: &PgPool,
    caller: &Caller,
    user_agent: Option<&str>,
) -> Result<String, sqlx::Error> {
    let token = random_token();
    sqlx::query(
        "INSERT INTO console.sessions (id, token_hash, csrf_token, key_id, user_agent, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(hash(&token))
    .bind(random_token())
    .bind(caller.key_id)
    .bind(user_agent.map(|ua| ua.chars().take(200).collect::<String>()))
    .bind(Utc::now() + SESSION_TTL)
    .execute(pool)
    .await?;
    Ok(token)
}

type SessionRow = (
    Uuid,
    String,
    DateTime<Utc>,
    Uuid,
    String,
    String,
    Option<String>,
);

/// The live session with this token: not expired, not revoked, its key not revoked.
pub async fn lookup(pool: &PgPool, token: &str) -> Result<Option<Session>, ConsoleError> {
    let row: Option<SessionRow> = sqlx::query_as(
        "UPDATE console.sessions s SET last_seen_at = now()
           FROM auth.api_keys k
          WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
            AND k.id = s.key_id AND k.revoked_at IS NULL
          RETURNING s.id, s.csrf_token, s.expires_at, k.id, k.name, k.role, k.channel",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    let Some((id, csrf, expires_at, key_id, name, role, channel)) = row else {
        return Ok(None);
    };
    let role: Role = role.parse().map_err(ConsoleError::Internal)?;
    Ok(Some(Session {
        id,
        caller: Caller {
            key_id,
            name,
            role,
            channel,
        },
        csrf,
        expires_at,
    }))
}

/// End a session (sign-out, or an admin revoking it). `false` if it was not live.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE console.sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A live session as admins see it.
pub struct Listed {
    pub id: Uuid,
    pub key_name: String,
    pub role: String,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Live sessions, most recently active first.
pub async fn list(pool: &PgPool) -> Result<Vec<Listed>, sqlx::Error> {
    type Row = (
        Uuid,
        String,
        String,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.id, k.name, k.role, s.user_agent, s.created_at, s.last_seen_at, s.expires_at
           FROM console.sessions s JOIN auth.api_keys k ON k.id = s.key_id
          WHERE s.revoked_at IS NULL AND s.expires_at > now() AND k.revoked_at IS NULL
          ORDER BY s.last_seen_at DESC LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, key_name, role, user_agent, created_at, last_seen_at, expires_at)| Listed {
                id,
                key_name,
                role,
                user_agent,
                created_at,
                last_seen_at,
                expires_at,
            },
        )
        .collect())
}

/// The browser's user agent, kept with its session so admins can tell sessions apart.
pub fn user_agent(parts: &Parts) -> Option<&str> {
    parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok())
}

/// A signed-in session whose role the API policy `P` admits. Without a live session:
/// a redirect to the sign-in page; with a role `P` does not admit: 403.
pub struct Signed<P: Policy>(pub Session, pub PhantomData<P>);

impl<P: Policy> FromRequestParts<AppState> for Signed<P> {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ConsoleError> {
        let session = match parts.extensions.get::<Session>() {
            Some(session) => session.clone(),
            None => {
                let token = cookie(parts, SESSION_COOKIE)
                    .filter(|t| t.len() <= 128)
                    .ok_or(ConsoleError::SignIn)?;
                lookup(&app.pool, token)
                    .await?
                    .ok_or(ConsoleError::SignIn)?
            }
        };
        if session.may::<P>() {
            Ok(Self(session, PhantomData))
        } else {
            Err(ConsoleError::Forbidden {
                role: session.caller.role.as_str(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_when_configured() {
        let c = set_cookie("a", "b", 60, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("a", "b", 60, true).ends_with("; Secure"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert_eq!(random_token().len(), 64);
    }
}

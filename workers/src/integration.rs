//! The integration worker: webhooks to endpoints registered through the API, signed the
//! Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! Every attempt is recorded in `integration.deliveries` on the pool, outside the handler's
//! transaction, so failed attempts stay visible after the transaction rolls back. Any
//! failed endpoint makes the handler fail and the message is redelivered with backoff (then
//! dead-lettered); on a redelivery an endpoint that already answered 2xx for this event is
//! skipped, so one failing endpoint does not make the others receive the event twice.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use ordo_runtime::telemetry;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::jetstream::{pattern_matches, Batching, Delivered, EventTypes, HandleError, Policy};
use crate::tls::TrustRoots;

pub const NAME: &str = "integration";

/// The integration worker's policy: webhooks go out one message at a time; events no active
/// endpoint subscribes to are recorded together.
#[derive(Debug, Clone)]
pub struct Integration {
    client: reqwest::Client,
}

impl Integration {
    /// Delivering with `client` (see [`client_with`]).
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

impl Default for Integration {
    fn default() -> Self {
        Self::new(default_client())
    }
}

impl From<Integration> for Arc<dyn Policy> {
    fn from(policy: Integration) -> Self {
        Arc::new(policy)
    }
}

#[async_trait]
impl Policy for Integration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn processed_table(&self) -> &'static str {
        "integration.processed"
    }

    fn batching(&self) -> Batching {
        Batching::OneByOne
    }

    async fn acts_on(&self, pool: &PgPool) -> Result<EventTypes, sqlx::Error> {
        subscribed_patterns(pool).await.map(EventTypes)
    }

    async fn handle(
        &self,
        pool: &PgPool,
        _: &mut PgConnection,
        events: &[&Delivered],
    ) -> Result<(), HandleError> {
        for event in events {
            handle(pool, &self.client, event).await?;
        }
        Ok(())
    }
}

/// How long one webhook request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const SECRET_PREFIX: &str = "whsec_";
/// Bytes of signing key in a generated secret.
const KEY_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64")]
pub struct InvalidSecret;

/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the key being the base64
/// part of `secret` after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, InvalidSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = BASE64.decode(encoded).map_err(|_| InvalidSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| InvalidSecret)?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// A new secret: `whsec_` + base64 of 24 random bytes (the random bytes of v4 uuids, which
/// come from the operating system's generator).
pub fn new_secret() -> String {
    let mut key = Vec::with_capacity(KEY_BYTES);
    while key.len() < KEY_BYTES {
        let bytes = *Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the version and variant bits: skip them.
        key.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 6 && *i != 8)
                .map(|(_, b)| *b),
        );
    }
    key.truncate(KEY_BYTES);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// Whether a pattern is one an endpoint may subscribe to: `*`, an exact type such as
/// `order.placed`, or a prefix such as `payment.*`. Segments are lower-case letters, digits,
/// `_` and `-`.
pub fn valid_event_type(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, s)| {
        (i == last && i > 0 && *s == "*")
            || (!s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                }))
    })
}

/// The event-type patterns of the active endpoints: an event none of them matches is
/// delivered nowhere.
pub async fn subscribed_patterns(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT unnest(event_types) FROM integration.endpoints WHERE disabled_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

/// Register an endpoint; returns its id and its signing secret.
pub async fn register(
    pool: &PgPool,
    url: &str,
    event_types: &[String],
) -> Result<(Uuid, String), sqlx::Error> {
    let id = Uuid::now_v7();
    let secret = new_secret();
    sqlx::query(
        "INSERT INTO integration.endpoints (id, url, event_types, secret) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(url)
    .bind(event_types)
    .bind(&secret)
    .execute(pool)
    .await?;
    Ok((id, secret))
}

/// An endpoint's delivery attempts, newest first, as `{"items": [...]}`; `None` if no
/// endpoint has this id.
pub async fn deliveries(
    pool: &PgPool,
    endpoint_id: Uuid,
    limit: i64,
) -> Result<Option<Value>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM integration.endpoints WHERE id = $1)")
            .bind(endpoint_id)
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        Uuid,
        Option<String>,
        i32,
        Option<i32>,
        bool,
        Option<String>,
        Option<i32>,
        DateTime<Utc>,
    )> = sqlx::query_as(
        "SELECT id, event_id, event_type, attempt, status_code, ok, error, duration_ms, created_at
           FROM integration.deliveries WHERE endpoint_id = $1
          ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(endpoint_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(
            |(id, event_id, event_type, attempt, status_code, ok, error, duration_ms, at)| {
                json!({"id": id, "endpoint_id": endpoint_id, "event_id": event_id,
                       "event_type": event_type, "attempt": attempt, "status_code": status_code,
                       "ok": ok, "error": error, "duration_ms": duration_ms, "created_at": at})
            },
        )
        .collect();
    Ok(Some(json!({ "items": items })))
}

/// The webhook client: https through rustls (webpki roots, plus `roots` when given, the
/// certificates of `ORDO_TLS_CA_FILE`), no redirects, [`TIMEOUT`] per request.
pub fn client_with(roots: Option<&TrustRoots>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ordo-webhooks/", env!("CARGO_PKG_VERSION")));
    for cert in roots.map(TrustRoots::certificates).unwrap_or_default() {
        let cert = reqwest::Certificate::from_der(cert)
            .map_err(|e| format!("a CA certificate refused by the webhook client: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// The webhook client without `ORDO_TLS_CA_FILE`: the webpki roots only.
pub fn default_client() -> reqwest::Client {
    static DEFAULT: OnceLock<reqwest::Client> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            client_with(None).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook client settings refused; using defaults");
                reqwest::Client::new()
            })
        })
        .clone()
}

struct Endpoint {
    id: Uuid,
    url: String,
    secret: String,
}

/// POST the event to one endpoint unless it already has it; record the attempt. `Err` is
/// why this endpoint failed.
async fn deliver(
    pool: &PgPool,
    client: &reqwest::Client,
    endpoint: &Endpoint,
    event: &Delivered,
) -> Result<(), HandleError> {
    let (attempts, delivered): (i64, Option<bool>) = sqlx::query_as(
        "SELECT count(*), bool_or(ok) FROM integration.deliveries WHERE endpoint_id = $1 AND event_id = $2",
    )
    .bind(endpoint.id)
    .bind(event.event_id)
    .fetch_one(pool)
    .await?;
    if delivered == Some(true) {
        return Ok(());
    }
    let now = Utc::now();
    let body = json!({"type": event.event_type, "timestamp": now, "data": event.body}).to_string();
    let id = event.event_id.to_string();
    let timestamp = now.timestamp();
    let signature = sign(&endpoint.secret, &id, timestamp, &body)
        .map_err(|e| HandleError::Retry(format!("endpoint {}: {e}", endpoint.id)))?;
    let started = Instant::now();
    let mut request = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature);
    // The receiver may continue the trace that began with the storefront's request.
    if let Some(traceparent) = telemetry::outgoing_traceparent(event.traceparent.as_deref()) {
        request = request.header("traceparent", traceparent);
    }
    let sent = request.body(body).send().await;
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let (status_code, error) = match &sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("answered {}", response.status())),
        ),
        Err(e) => (None, Some(error_chain(e))),
    };
    sqlx::query(
        "INSERT INTO integration.deliveries
             (id, endpoint_id, event_id, event_type, attempt, status_code, ok, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(endpoint.id)
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(i32::try_from(attempts + 1).unwrap_or(i32::MAX))
    .bind(status_code.map(i32::from))
    .bind(error.is_none())
    .bind(&error)
    .bind(duration_ms)
    .execute(pool)
    .await?;
    match error {
        None => Ok(()),
        Some(error) => Err(HandleError::Retry(format!("{}: {error}", endpoint.url))),
    }
}

/// reqwest's error with its sources ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Send one event to every endpoint subscribed to its type, all at once.
async fn handle(
    pool: &PgPool,
    client: &reqwest::Client,
    event: &Delivered,
) -> Result<(), HandleError> {
    let rows: Vec<(Uuid, String, Vec<String>, String)> = sqlx::query_as(
        "SELECT id, url, event_types, secret FROM integration.endpoints
          WHERE disabled_at IS NULL ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    let endpoints: Vec<Endpoint> = rows
        .into_iter()
        .filter(|(_, _, types, _)| types.iter().any(|p| pattern_matches(p, &event.event_type)))
        .map(|(id, url, _, secret)| Endpoint { id, url, secret })
        .collect();
    let outcomes = futures::future::join_all(endpoints.iter().map(|e| {
        let span =
            tracing::info_span!("webhook.deliver", endpoint.id = %e.id, event.id = %event.event_id);
        deliver(pool, client, e, event).instrument(span)
    }))
    .await;
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(HandleError::Db(e)) => return Err(HandleError::Db(e)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(HandleError::Retry(format!(
            "{} of {} webhook endpoints failed: {}",
            failures.len(),
            endpoints.len(),
            failures.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.ok().as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert!(sign("whsec_not base64!", "id", 1, "{}").is_err());
    }

    #[test]
    fn a_new_secret_holds_24_bytes_of_key_and_signs() {
        let secret = new_secret();
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|k| BASE64.decode(k).ok());
        assert_eq!(key.map(|k| k.len()), Some(KEY_BYTES));
        assert_ne!(secret, new_secret());
        assert!(sign(&secret, "id", 1, "{}").is_ok());
    }

    #[test]
    fn only_the_three_pattern_forms_are_valid() {
        for ok in ["*", "order.placed", "payment.*", "customer.note_added"] {
            assert!(valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "order.",
            ".placed",
            "order*",
            "*.placed",
            "order.*.x",
            "Order.Placed",
            "order placed",
            "**",
        ] {
            assert!(!valid_event_type(bad), "{bad}");
        }
    }
}

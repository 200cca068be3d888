//! The endpoint lifecycle: register, list, show (with its queue and state), update, disable
//! and enable, delete, rotate the secret.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::signing::new_secret;

/// How long deliveries carry the previous secret's signature too after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// An endpoint, its state and its queue. The secret is never shown again after it was
/// created or rotated.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    /// Patterns: `order.placed`, `payment.*`, `*`.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// The sales channel whose events it receives; `null`: every channel's.
    pub channel: Option<String>,
    /// `active`, `failing` (its last attempt failed and none has succeeded since) or
    /// `disabled`.
    #[schema(example = "active")]
    pub state: String,
    /// Since when every attempt has failed.
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// `manual`, or `auto` when it was disabled for failing too long.
    pub disabled_reason: Option<String>,
    /// Until when deliveries carry the previous secret's signature too (after a rotation).
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Deliveries waiting (pending).
    pub pending: i64,
    /// Age of the oldest pending delivery, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
    pub delivered: i64,
    pub failed: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
}

/// What `PATCH /v1/webhooks/{id}` may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// The sales channel it is subscribed to; `Some(None)`: every channel. Events recorded
    /// from then on are matched against it; deliveries already written stay.
    pub channel: Option<Option<String>>,
}

/// An endpoint with its deliveries' counts, from the totals kept as deliveries change
/// (migrations 0175, 0178), and the age of its oldest pending delivery, one probe of
/// `outbox_pending_since`: never by reading the deliveries kept for the retention window,
/// nor the backlog behind an endpoint that does not answer. The workers' page and the
/// delivery pool's gauges read it too.
pub const VIEW: &str = "SELECT e.id, e.url, e.event_types, e.description, e.channel,
        CASE WHEN e.disabled_at IS NOT NULL THEN 'disabled'
             WHEN e.failing_since IS NOT NULL THEN 'failing'
             ELSE 'active' END AS state,
        e.failing_since, e.disabled_at, e.disabled_reason,
        CASE WHEN e.previous_secret_until > now() THEN e.previous_secret_until END
            AS previous_secret_until,
        totals.pending,
        coalesce(extract(epoch FROM now() - (
            SELECT o.created_at FROM integration.outbox o
             WHERE o.endpoint_id = e.id AND o.status = 'pending'
             ORDER BY o.created_at LIMIT 1))::float8, 0) AS oldest_pending_seconds,
        totals.delivered, totals.failed,
        e.created_at, e.updated_at
   FROM integration.endpoints e
  CROSS JOIN LATERAL (
        SELECT coalesce(sum(t.n) FILTER (WHERE t.status = 'pending'), 0)::int8 AS pending,
               coalesce(sum(t.n) FILTER (WHERE t.status = 'delivered'), 0)::int8 AS delivered,
               coalesce(sum(t.n) FILTER (WHERE t.status = 'failed'), 0)::int8 AS failed
          FROM integration.outbox_totals t WHERE t.endpoint_id = e.id) totals";

/// Register an endpoint for the events of `channel` (`None`: every channel's); returns its
/// id and its signing secret.
pub async fn register(
    pool: &PgPool,
    url: &str,
    event_types: &[String],
    description: Option<&str>,
    channel: Option<&str>,
) -> Result<(Uuid, String), sqlx::Error> {
    let id = Uuid::now_v7();
    let secret = new_secret();
    sqlx::query(
        "INSERT INTO integration.endpoints (id, url, event_types, secret, description, channel)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(url)
    .bind(event_types)
    .bind(&secret)
    .bind(description)
    .bind(channel)
    .execute(pool)
    .await?;
    Ok((id, secret))
}

pub(crate) async fn exists(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM integration.endpoints WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Every endpoint, oldest first.
pub async fn list(pool: &PgPool) -> Result<EndpointList, sqlx::Error> {
    let items = sqlx::query_as(&format!("{VIEW} ORDER BY e.created_at, e.id"))
        .fetch_all(pool)
        .await?;
    Ok(EndpointList { items })
}

pub async fn show(pool: &PgPool, id: Uuid) -> Result<Option<EndpointView>, sqlx::Error> {
    sqlx::query_as(&format!("{VIEW} WHERE e.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Change the URL, the event types or the description; `None` if no endpoint has this id.
/// Deliveries already written keep going to the endpoint (to its new URL).
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    change: &EndpointUpdate,
) -> Result<Option<EndpointView>, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE integration.endpoints
            SET url = coalesce($2, url), event_types = coalesce($3, event_types),
                description = CASE WHEN $4 THEN $5 ELSE description END,
                channel = CASE WHEN $6 THEN $7 ELSE channel END, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(&change.url)
    .bind(&change.event_types)
    .bind(change.description.is_some())
    .bind(change.description.clone().flatten())
    .bind(change.channel.is_some())
    .bind(change.channel.clone().flatten())
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    show(pool, id).await
}

/// Disable (no new deliveries are written for it, and its pending ones wait) or enable
/// (its pending deliveries go on; it is no longer counted as failing).
pub async fn set_enabled(
    pool: &PgPool,
    id: Uuid,
    enabled: bool,
) -> Result<Option<EndpointView>, sqlx::Error> {
    let updated = if enabled {
        sqlx::query(
            "UPDATE integration.endpoints
                SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL,
                    updated_at = now()
              WHERE id = $1",
        )
    } else {
        sqlx::query(
            "UPDATE integration.endpoints
                SET disabled_at = coalesce(disabled_at, now()),
                    disabled_reason = coalesce(disabled_reason, 'manual'), updated_at = now()
              WHERE id = $1",
        )
    }
    .bind(id)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    show(pool, id).await
}

/// Delete an endpoint and its pending deliveries (its attempts stay recorded); `false` if
/// no endpoint has this id.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM integration.endpoints WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

/// A new secret for an endpoint; for [`ROTATION_OVERLAP`] deliveries are signed with the
/// previous one too. `None` if no endpoint has this id.
pub async fn rotate_secret(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let secret = new_secret();
    let updated = sqlx::query(
        "UPDATE integration.endpoints
            SET previous_secret = secret, secret = $2,
                previous_secret_until = now() + make_interval(secs => $3), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(&secret)
    .bind(ROTATION_OVERLAP.as_secs_f64())
    .execute(pool)
    .await?;
    Ok((updated.rows_affected() > 0).then_some(secret))
}

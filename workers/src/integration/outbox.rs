//! The webhook outbox (`integration.outbox`): one delivery per (endpoint, event), written by
//! the integration worker, sent by the delivery pool, listed and retried by operators.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::jetstream::{pattern_matches, Delivered};

/// The event type of the message `POST /v1/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// A delivery's status: waiting to be sent (or retried), delivered (a 2xx), or failed
/// after its last scheduled attempt.
pub const STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// The statement that writes deliveries (`write.sql`).
pub const WRITE: &str = include_str!("write.sql");

/// The active endpoints: each one's id, event-type patterns and channel (`None`: every
/// channel).
pub(crate) struct Endpoints(Vec<(Uuid, Vec<String>, Option<String>)>);

impl Endpoints {
    /// Read the active endpoints, inside the transaction that will write their deliveries.
    pub(crate) async fn active(tx: &mut PgConnection) -> Result<Self, sqlx::Error> {
        Ok(Self(
            sqlx::query_as(
                "SELECT id, event_types, channel FROM integration.endpoints WHERE disabled_at IS NULL",
            )
            .fetch_all(&mut *tx)
            .await?,
        ))
    }

    /// The endpoints subscribed to `event`'s type and channel.
    fn of<'a>(&'a self, event: &'a Delivered) -> impl Iterator<Item = Uuid> + 'a {
        self.0
            .iter()
            .filter_map(move |(endpoint, patterns, channel)| {
                (channel.as_ref().is_none_or(|c| *c == event.channel)
                    && patterns
                        .iter()
                        .any(|p| pattern_matches(p, &event.event_type)))
                .then_some(*endpoint)
            })
    }

    /// Whether any endpoint is subscribed to `event`.
    pub(crate) fn want(&self, event: &Delivered) -> bool {
        self.of(event).next().is_some()
    }

    /// Write the deliveries of `events`: one per endpoint subscribed to each event's type
    /// and channel (or every channel), in one statement. There is one delivery per
    /// endpoint and event: a pending one is left as it is; one delivered or failed is due
    /// again (an operator's replay that repeats effects; a plain redelivery never gets
    /// here, the event being processed already).
    pub(crate) async fn write(
        &self,
        tx: &mut PgConnection,
        events: &[(&Delivered, Value)],
    ) -> Result<(), sqlx::Error> {
        let mut rows = Rows::default();
        for (event, body) in events {
            for endpoint in self.of(event) {
                rows.push(endpoint, event, body);
            }
        }
        if rows.ids.is_empty() {
            return Ok(());
        }
        // Prepared: its plan depends on the outbox's statistics, which the delivery pool
        // keeps current (`STATISTICS_EVERY` in `pool.rs`).
        sqlx::query(WRITE)
            .bind(rows.ids)
            .bind(rows.endpoints)
            .bind(rows.events)
            .bind(rows.types)
            .bind(rows.aggregates)
            .bind(rows.positions)
            .bind(rows.bodies)
            .bind(rows.traceparents)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Outbox rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    endpoints: Vec<Uuid>,
    events: Vec<Uuid>,
    types: Vec<String>,
    aggregates: Vec<String>,
    positions: Vec<i64>,
    bodies: Vec<Value>,
    traceparents: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, endpoint: Uuid, event: &Delivered, body: &Value) {
        self.ids.push(Uuid::now_v7());
        self.endpoints.push(endpoint);
        self.events.push(event.event_id);
        self.types.push(event.event_type.clone());
        self.aggregates.push(event.aggregate_id.clone());
        self.positions.push(event.position);
        self.bodies.push(body.clone());
        self.traceparents.push(event.traceparent.clone());
    }
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The event's id: the `webhook-id` header of every attempt.
    pub event_id: Uuid,
    #[schema(example = "order.placed")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    #[schema(example = "pending")]
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AttemptView {
    pub id: Uuid,
    pub delivery_id: Option<Uuid>,
    pub event_id: Uuid,
    pub event_type: Option<String>,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/webhooks/{id}/deliveries`: newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

/// `GET /v1/webhooks/{id}/deliveries/{delivery_id}`: the delivery and its attempts,
/// newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub history: Vec<AttemptView>,
}

const COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts,
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
    last_status_code, last_error, created_at, delivered_at";

/// An endpoint's deliveries, newest first, optionally those with `status` only; `None` if
/// no endpoint has this id.
pub async fn deliveries(
    pool: &PgPool,
    endpoint_id: Uuid,
    status: Option<&str>,
    limit: i64,
) -> Result<Option<DeliveryList>, sqlx::Error> {
    if !super::endpoints::exists(pool, endpoint_id).await? {
        return Ok(None);
    }
    let items = match status {
        Some(status) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM integration.outbox
                  WHERE endpoint_id = $1 AND status = $3
                  ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(endpoint_id)
            .bind(limit)
            .bind(status)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(&EVERY_STATUS)
                .bind(endpoint_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(Some(DeliveryList { items }))
}

/// An endpoint's (`$1`) newest `$2` deliveries, whatever their status: each status's newest
/// through its own index (`outbox_pending_since`, `outbox_by_status`), merged. Ordering the
/// endpoint's deliveries in one statement sorted every delivery it ever had.
pub static EVERY_STATUS: LazyLock<String> = LazyLock::new(|| {
    let newest = |status: &str| {
        format!(
            "(SELECT {COLUMNS} FROM integration.outbox
               WHERE endpoint_id = $1 AND status = '{status}'
               ORDER BY created_at DESC, id DESC LIMIT $2)"
        )
    };
    format!(
        "SELECT * FROM ({}) newest ORDER BY created_at DESC, id DESC LIMIT $2",
        STATUSES.map(newest).join(" UNION ALL ")
    )
});

/// One delivery of an endpoint with its attempts.
pub async fn delivery(
    pool: &PgPool,
    endpoint_id: Uuid,
    id: Uuid,
) -> Result<Option<DeliveryDetail>, sqlx::Error> {
    let delivery: Option<DeliveryView> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM integration.outbox WHERE endpoint_id = $1 AND id = $2"
    ))
    .bind(endpoint_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(delivery) = delivery else {
        return Ok(None);
    };
    let history = sqlx::query_as(
        "SELECT id, delivery_id, event_id, event_type, attempt, status_code, ok, error,
                duration_ms, created_at
           FROM integration.deliveries WHERE delivery_id = $1
          ORDER BY created_at DESC, id DESC",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(DeliveryDetail { delivery, history }))
}

/// Make a delivery due now: a pending one is sent at once (unless in flight), a failed one
/// gets one more attempt; a delivered one is sent again. `None` if the endpoint has no
/// such delivery.
pub async fn retry_now(
    pool: &PgPool,
    endpoint_id: Uuid,
    id: Uuid,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE integration.outbox
            SET status = 'pending', next_attempt_at = now(), delivered_at = NULL
          WHERE endpoint_id = $1 AND id = $2
      RETURNING {COLUMNS}"
    ))
    .bind(endpoint_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Queue a test message for an endpoint (sent whatever it subscribes to, `type`
/// `webhook.test`); `None` if no endpoint has this id.
pub async fn send_test(
    pool: &PgPool,
    endpoint_id: Uuid,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    let event_id = Uuid::now_v7();
    sqlx::query_as(&format!(
        "INSERT INTO integration.outbox
             (id, endpoint_id, event_id, event_type, aggregate_id, position, body)
         SELECT $1, id, $2, $3, id::text, 0, $4 FROM integration.endpoints WHERE id = $5
      RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(event_id)
    .bind(TEST_EVENT)
    .bind(json!({"message": "a test message from Ordo", "endpoint_id": endpoint_id}))
    .bind(endpoint_id)
    .fetch_optional(pool)
    .await
}

/// Withhold an erased customer's personal fields in the outbox rows already written for
/// them (delivered or not): a retry or a redelivery sends them withheld, and the stored
/// history no longer holds them.
pub async fn withhold(tx: &mut PgConnection, customer: uuid::Uuid) -> Result<(), sqlx::Error> {
    use ordo_commands::privacy::{open_fields, KeyState, Mode};
    let rows: Vec<(uuid::Uuid, String, serde_json::Value)> = sqlx::query_as(
        "SELECT id, event_type, body FROM integration.outbox
          WHERE event_type = ANY($1) AND body ->> 'customer_id' = $2",
    )
    .bind(PERSONAL_TYPES)
    .bind(customer.to_string())
    .fetch_all(&mut *tx)
    .await?;
    for (id, event_type, mut body) in rows {
        open_fields(
            &event_type,
            &mut body,
            customer,
            &KeyState::Erased,
            Mode::Fold,
        );
        sqlx::query("UPDATE integration.outbox SET body = $2 WHERE id = $1")
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The event types with personal fields.
const PERSONAL_TYPES: &[&str] = &[
    ordo_domain::event::types::CUSTOMER_REGISTERED,
    ordo_domain::event::types::CUSTOMER_NOTE_ADDED,
    ordo_domain::event::types::ORDER_PLACED,
];

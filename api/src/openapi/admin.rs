//! Body shapes of the operations routes (health, projections, analytics, webhooks, workers,
//! notifications), for the OpenAPI document only; see `schemas.rs`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

#[derive(ToSchema)]
pub struct Health {
    /// `ok`, or `down` when a role stays down.
    #[schema(example = "ok")]
    pub status: String,
    /// The roles that stay down (only with `down`).
    #[schema(nullable = false)]
    pub down: Option<Vec<String>>,
}

/// `status` is `ready` or `not_ready`; `checks` has `postgres` (`status` `up`|`down`,
/// `latency_ms` or `error`), `encryption` (`status` `on` with `master_key_version`, or `off`
/// with a `detail`: new personal data is then stored in clear, and the process is still
/// ready) and, when this process has a NATS probe, `nats` (`status`, `required`); `roles` maps each role of the process (`api`, `projector.orders`, `relay`,
/// `worker.analytics`, …) to `starting`, `running`, `stopping`, `stopped` or `failed`.
#[derive(ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    pub checks: std::collections::BTreeMap<String, Value>,
    pub roles: std::collections::BTreeMap<String, String>,
}

// ------------------------------------------------------------------ audit

/// A signed checkpoint as stored: Ed25519 over `ordo-checkpoint-v1`, the position
/// (big-endian i64), the hash and `signed_at` in microseconds (big-endian i64).
#[derive(ToSchema)]
pub struct AuditCheckpoint {
    pub id: i64,
    /// The log position signed: its event's hash is `hash`.
    pub position: i64,
    /// Hex.
    pub hash: String,
    /// Base64.
    pub signature: String,
    /// The public key it names, base64 (never trusted by verification).
    pub public_key: String,
    pub signed_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct AuditCheckpointList {
    pub items: Vec<AuditCheckpoint>,
}

#[derive(ToSchema)]
pub struct StartVerification {
    /// The first position to check (default 1).
    #[schema(nullable = false, minimum = 1)]
    pub from_position: Option<i64>,
}

// ------------------------------------------------------------------ projections

#[derive(ToSchema)]
pub struct ProjectionList {
    pub items: Vec<ProjectionStatus>,
}

#[derive(ToSchema)]
pub struct ProjectionStatus {
    /// `orders`, `payments` or `customers`.
    pub name: String,
    /// `running`, `standby`, `failed` or `rebuilding`.
    pub state: String,
    pub position: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub error_position: Option<i64>,
    pub runner: Option<String>,
    /// The version of the read model's code that built the tables serving now.
    pub version: i32,
    pub rebuild: Option<RebuildStatus>,
}

#[derive(ToSchema)]
pub struct RebuildStatus {
    pub state: String,
    pub done: i64,
    pub total: i64,
    /// `done` of `total`, 0 to 100.
    pub percent: f64,
    pub events_per_second: f64,
    /// Seconds left at the current rate.
    pub eta_seconds: Option<f64>,
    /// The version being built.
    pub version: Option<i32>,
}

#[derive(ToSchema)]
pub struct RebuildAccepted {
    pub name: String,
    /// False when a rebuild was already requested or running.
    pub requested: bool,
    pub status: ProjectionStatus,
}

// ------------------------------------------------------------------ analytics

pub use ordo_workers::analytics::{SalesBucket, SalesReport};

#[derive(ToSchema)]
pub struct Funnel {
    pub placed: i64,
    pub confirmed: i64,
    pub paid: i64,
    pub shipped: i64,
    pub delivered: i64,
    pub cancelled: i64,
    pub refunded: i64,
    /// cancelled / placed; 0 when nothing is placed.
    pub cancellation_rate: f64,
    /// refunded / paid; 0 when nothing is paid.
    pub refund_rate: f64,
}

// ------------------------------------------------------------------ webhooks

#[derive(ToSchema)]
pub struct RegisterWebhook {
    /// `http://` or `https://` with a host, at most 2048 characters.
    #[schema(
        example = "https://shop.example.com/hooks/ordo",
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#:\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$"
    )]
    pub url: String,
    /// Event types (`order.placed`), prefixes (`payment.*`) or `*`.
    #[schema(min_items = 1, example = json!(["order.placed", "payment.*"]))]
    pub event_types: Vec<EventTypePattern>,
    /// What the endpoint is for; at most 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Only this sales channel's events; absent or null: every channel's.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
}

/// `*`, an event type (`order.placed`) or a prefix (`payment.*`): dot-separated segments of
/// lower-case letters, digits, `_` or `-` (`integration::valid_event_type`).
pub struct EventTypePattern;

impl PartialSchema for EventTypePattern {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$"))
            .examples(["order.placed"]);
        RefOr::T(Schema::Object(schema.build()))
    }
}

impl ToSchema for EventTypePattern {}

#[derive(ToSchema)]
pub struct WebhookCreated {
    pub id: Uuid,
    /// The signing secret (`whsec_...`), shown only here.
    pub secret: String,
}

/// `PATCH /v1/webhooks/{id}`: fields left out stay as they are.
#[derive(ToSchema)]
pub struct UpdateWebhook {
    #[schema(example = "https://shop.example.com/hooks/ordo", max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub event_types: Option<Vec<EventTypePattern>>,
    /// Null clears it; at most 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Subscribe it to the events of this sales channel only; null: of every channel.
    /// Applies to events recorded from then on.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
}

// ------------------------------------------------------------------ workers

/// Give exactly one of the two.
#[derive(ToSchema)]
pub struct Replay {
    /// The global position of the first event to deliver again.
    pub from_position: Option<i64>,
    pub from_time: Option<DateTime<Utc>>,
    /// Repeat side effects (e-mails, webhooks) from there; refused (422) for analytics.
    pub reprocess: Option<bool>,
}

#[derive(ToSchema)]
pub struct ReplayAccepted {
    pub worker: String,
    /// The time the worker's consumer starts again from.
    pub from_time: DateTime<Utc>,
    pub reprocess: bool,
    /// Events whose processed record was forgotten so their effects repeat (0 without
    /// `reprocess`).
    pub forgotten: u64,
}

#[derive(ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetter>,
}

#[derive(ToSchema)]
pub struct DeadLetter {
    pub id: Uuid,
    pub worker: String,
    pub event_id: Option<Uuid>,
    pub subject: String,
    pub stream_sequence: i64,
    pub attempts: i64,
    pub error: String,
    pub created_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
pub struct RedriveAll {
    pub worker: String,
    /// The most dead letters to redrive now, oldest first (default 100).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(ToSchema)]
pub struct Redriven {
    pub id: Uuid,
    pub redriven: bool,
}

#[derive(ToSchema)]
pub struct RedrivenAll {
    pub worker: String,
    /// How many dead letters were published again.
    pub redriven: u64,
    /// How many still wait: ask again until none do.
    pub remaining: u64,
}

// ------------------------------------------------------------------ notifications

#[derive(ToSchema)]
pub struct NotificationList {
    pub items: Vec<Notification>,
}

#[derive(ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub event_id: Uuid,
    /// `order_placed`, `order_shipped`, `order_cancelled` or `payment_refunded`.
    pub kind: String,
    /// The sales channel of the event that caused it.
    pub channel: String,
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// `sent`, `recorded` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

//! Request bodies of the operations routes (audit, webhooks, workers), which handlers read
//! field by field, for the OpenAPI document only. Their answers are described by the types
//! they serialize, beside the handlers.

use chrono::{DateTime, Utc};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

// ------------------------------------------------------------------ audit

#[derive(ToSchema)]
pub struct StartVerification {
    /// The first position to check (default 1; `null` is the default too).
    #[schema(minimum = 1)]
    pub from_position: Option<i64>,
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
pub struct RedriveAll {
    pub worker: String,
    /// The most dead letters to redrive now, oldest first (default 100).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

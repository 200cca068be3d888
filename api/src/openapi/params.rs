//! Query parameters, for the OpenAPI document only: handlers read them from a map
//! (`routes::int_param` and friends), which ignores names it does not know.

use chrono::{DateTime, Utc};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use ordo_projections::views::OrderStatus;

/// Read your own writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadOne {
    /// Wait until the read model has applied the event at this global position (a command's
    /// `position`); 503 if it does not get there within a few seconds.
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderList {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its
    /// own channel only: naming another is 403.
    #[param(nullable = false, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
    #[param(nullable = false)]
    pub customer_id: Option<Uuid>,
    #[param(nullable = false, inline)]
    pub status: Option<OrderStatus>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub cursor: Option<Uuid>,
    /// Page size, 50 by default.
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentList {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its
    /// own channel only: naming another is 403.
    #[param(nullable = false, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
    #[param(nullable = false)]
    pub order_id: Option<Uuid>,
    #[param(nullable = false)]
    pub cursor: Option<Uuid>,
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerList {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its
    /// own channel only: naming another is 403.
    #[param(nullable = false, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
    /// Exact e-mail address, case-insensitive.
    #[param(nullable = false)]
    pub email: Option<String>,
    #[param(nullable = false)]
    pub cursor: Option<Uuid>,
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct History {
    /// Events after this sequence number (`next_cursor` of the previous page).
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<i64>,
    /// Page size, 100 by default.
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Give at most one of the two; neither means the current state.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct State {
    /// The state right after the event with this sequence number. Exclusive with `at`:
    /// both → 400.
    #[param(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub version: Option<i64>,
    /// The state as it was at this instant (RFC 3339). Exclusive with `version`: both →
    /// 400.
    #[param(nullable = false)]
    pub at: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Sales {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its
    /// own channel only: naming another is 403.
    #[param(nullable = false, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
    /// Default: seven days before `to`. Must not be after `to` (else 400).
    #[param(nullable = false)]
    pub from: Option<DateTime<Utc>>,
    /// Default: now. Must not be before `from` (else 400).
    #[param(nullable = false)]
    pub to: Option<DateTime<Utc>>,
    /// Default: `day`.
    #[param(nullable = false, inline)]
    pub granularity: Option<Granularity>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Notifications {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its
    /// own channel only: naming another is 403.
    #[param(nullable = false, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
    #[param(nullable = false)]
    pub order_id: Option<Uuid>,
    #[param(nullable = false)]
    pub customer_id: Option<Uuid>,
}

// The same names as `ordo_workers::Worker::ALL` (tests::the_closed_sets_are_the_codes).
/// A worker's name.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum WorkerName {
    Notification,
    Analytics,
    Integration,
}

// The same as `ordo_workers::integration::outbox::STATUSES` (tests::the_closed_sets_are_the_codes).
/// A webhook delivery's status.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetters {
    /// Only this worker's dead letters.
    #[param(nullable = false)]
    pub worker: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// Page size, 50 by default.
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

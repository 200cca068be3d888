//! The audit trail for support: a stream's events with their metadata, and its state as
//! it was at a version or an instant. Read from the event store itself.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use ordo_commands::history::{self, ChainLink, RecordedEvent, Until};
use ordo_domain::customer::Customer;
use ordo_domain::order::Order;
use ordo_domain::payment::Payment;
use ordo_projections::views::Page;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::int_param;
use crate::auth::{self, Allowed};
use crate::extract::{PathId, QueryParams};
use crate::openapi::{params, RestrictedReadOneProblems};
use crate::{views, ApiError, AppState};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Clone, Copy)]
enum Kind {
    Order,
    Payment,
    Customer,
}

impl Kind {
    fn aggregate_type(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Payment => "payment",
            Self::Customer => "customer",
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(order_history))
        .routes(routes!(order_state))
        .routes(routes!(payment_history))
        .routes(routes!(payment_state))
        .routes(routes!(customer_history))
        .routes(routes!(customer_state))
}

/// The two audit reads of one kind of stream, as handlers with their OpenAPI descriptions.
macro_rules! audit_routes {
    ($kind:expr, $history:ident: $history_path:literal, $state:ident: $state_path:literal, $body:ty) => {
        /// The stream's events with their metadata, oldest first (support, admin).
        #[utoipa::path(get, path = $history_path, tag = "audit",
            params(("id" = Uuid, Path, description = "The stream's id"), params::History),
            responses((status = 200, description = "A page of events", body = Page<HistoryItem>),
                RestrictedReadOneProblems))]
        async fn $history(
            State(app): State<AppState>,
            Allowed(caller, _): Allowed<auth::Auditors>,
            PathId(id): PathId,
            QueryParams(q): QueryParams,
        ) -> Result<Json<Page<HistoryItem>>, ApiError> {
            visible(&app, &caller, $kind, &id.to_string()).await?;
            history(app, $kind, id.to_string(), q).await
        }

        /// The state folded from the log at a version or an instant (support, admin).
        #[utoipa::path(get, path = $state_path, tag = "audit",
            params(("id" = Uuid, Path, description = "The stream's id"), params::State),
            responses((status = 200, description = "The state", body = $body,
                headers(("ETag" = String, description = "`\"<version>\"` folded"))),
                RestrictedReadOneProblems))]
        async fn $state(
            State(app): State<AppState>,
            Allowed(caller, _): Allowed<auth::Auditors>,
            PathId(id): PathId,
            QueryParams(q): QueryParams,
        ) -> Result<Response, ApiError> {
            visible(&app, &caller, $kind, &id.to_string()).await?;
            state(app, $kind, id.to_string(), q).await
        }
    };
}

audit_routes!(Kind::Order,
    order_history: "/v1/orders/{id}/history", order_state: "/v1/orders/{id}/state",
    views::OrderState);
audit_routes!(Kind::Payment,
    payment_history: "/v1/payments/{id}/history", payment_state: "/v1/payments/{id}/state",
    views::PaymentState);
audit_routes!(Kind::Customer,
    customer_history: "/v1/customers/{id}/history", customer_state: "/v1/customers/{id}/state",
    views::CustomerState);

/// 404, as for a stream that does not exist, unless `caller` sees the stream's channel.
async fn visible(
    app: &AppState,
    caller: &crate::Caller,
    kind: Kind,
    id: &str,
) -> Result<(), ApiError> {
    let channel = app
        .commands
        .store()
        .stream_channel(kind.aggregate_type(), id)
        .await?;
    match channel {
        Some(channel) => super::channels::visible(caller, &channel, kind.aggregate_type()),
        None => Ok(()),
    }
}

async fn history(
    app: AppState,
    kind: Kind,
    id: String,
    q: HashMap<String, String>,
) -> Result<Json<Page<HistoryItem>>, ApiError> {
    let after = int_param(&q, "after")?.unwrap_or(0);
    let limit = int_param(&q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadQuery {
            param: "limit",
            detail: format!("must be from 1 to {MAX_LIMIT}"),
        });
    }
    let mut events = history::read_stream(
        app.commands.keys(),
        kind.aggregate_type(),
        &id,
        after,
        limit + 1,
    )
    .await?;
    if events.is_empty() && after == 0 {
        return Err(ApiError::NotFound(format!(
            "no {} has this id",
            kind.aggregate_type()
        )));
    }
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_cursor = match (more, events.last()) {
        (true, Some(last)) => Some(last.sequence.to_string()),
        _ => None,
    };
    let items = events.into_iter().map(history_item).collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One event of a stream with its metadata.
#[derive(Serialize, ToSchema)]
struct HistoryItem {
    sequence: i64,
    position: i64,
    event_id: Uuid,
    /// The event type, e.g. `order.placed`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    kind: String,
    /// A number (a string only for versions recorded before versions were numbers).
    schema_version: Value,
    recorded_at: DateTime<Utc>,
    /// The event's payload; its shape per type and version is in `schemas/events/`.
    #[schema(value_type = BTreeMap<String, Value>)]
    data: Value,
    metadata: HistoryMetadata,
    /// `linked`: its stored hash links it to the event before it in the log; `broken`: it
    /// does not (this event was changed, or the one before it removed, inserted or moved;
    /// `ordo audit verify` says more); `unchained`: it predates the hash chain.
    #[schema(value_type = String, example = "linked")]
    chain: ChainLink,
}

/// What was recorded with an event, as stored (null where nothing was).
#[derive(Serialize, ToSchema)]
struct HistoryMetadata {
    actor: Actor,
    #[schema(value_type = Option<String>)]
    correlation_id: Value,
    #[schema(value_type = Option<String>)]
    causation_id: Value,
    #[schema(value_type = Option<String>)]
    request_id: Value,
    #[schema(value_type = Option<String>)]
    idempotency_key: Value,
    #[schema(value_type = Option<String>)]
    traceparent: Value,
    /// The sales channel of the stream.
    #[schema(value_type = String)]
    channel: Value,
}

/// Who issued the command that recorded the event.
#[derive(Serialize, ToSchema)]
struct Actor {
    #[schema(value_type = Option<String>)]
    name: Value,
    #[schema(value_type = Option<String>)]
    role: Value,
}

fn history_item(event: RecordedEvent) -> HistoryItem {
    let meta = |key: &str| event.metadata.get(key).cloned().unwrap_or(Value::Null);
    let schema_version = event
        .schema_version
        .parse::<u32>()
        .map(Value::from)
        .unwrap_or(Value::String(event.schema_version.clone()));
    HistoryItem {
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id,
        kind: event.event_type.clone(),
        schema_version,
        recorded_at: event.recorded_at,
        metadata: HistoryMetadata {
            actor: Actor {
                name: meta("actor_name"),
                role: meta("actor_role"),
            },
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            request_id: meta("request_id"),
            idempotency_key: meta("idempotency_key"),
            traceparent: meta("traceparent"),
            channel: event
                .metadata
                .get("channel")
                .cloned()
                .unwrap_or_else(|| Value::from(ordo_commands::channels::DEFAULT)),
        },
        chain: event.chain,
        data: event.data,
    }
}

async fn state(
    app: AppState,
    kind: Kind,
    id: String,
    q: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let version = int_param(&q, "version")?;
    let at = q
        .get("at")
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadQuery {
                    param: "at",
                    detail: "must be an RFC 3339 time such as 2026-01-31T12:00:00Z".into(),
                })
        })
        .transpose()?;
    let until = match (version, at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadQuery {
                param: "version",
                detail: "give either version or at, not both".into(),
            })
        }
        (Some(v), None) => Until::Version(v as u64),
        (None, Some(t)) => Until::Time(t),
        (None, None) => Until::Version(u64::MAX),
    };
    let keys = app.commands.keys();
    match kind {
        Kind::Order => {
            let s = history::fold_until::<Order>(keys, &id, until).await?;
            folded_state(kind, version, s.version, views::order(&s.state, s.version))
        }
        Kind::Payment => {
            let s = history::fold_until::<Payment>(keys, &id, until).await?;
            folded_state(
                kind,
                version,
                s.version,
                views::payment(&s.state, s.version),
            )
        }
        Kind::Customer => {
            let s = history::fold_until::<Customer>(keys, &id, until).await?;
            folded_state(
                kind,
                version,
                s.version,
                views::customer(&s.state, s.version),
            )
        }
    }
}

/// The state folded to version `folded`, or 404 when the stream did not exist then or has
/// no such `version` as asked for.
fn folded_state(
    kind: Kind,
    version: Option<i64>,
    folded: u64,
    body: impl Serialize,
) -> Result<Response, ApiError> {
    if folded == 0 {
        return Err(ApiError::NotFound(format!(
            "no {} with this id existed at that point",
            kind.aggregate_type()
        )));
    }
    if let Some(v) = version {
        if folded != v as u64 {
            return Err(ApiError::NotFound(format!(
                "the {} stream has no version {v}; it is at version {folded}",
                kind.aggregate_type()
            )));
        }
    }
    Ok(super::versioned_json(folded, body))
}

//! The audit trail for support: a stream's events with their metadata, and its state as
//! it was at a version or an instant. Read from the event store itself.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ordo_commands::history::{self, RecordedEvent, Until};
use ordo_domain::customer::Customer;
use ordo_domain::order::Order;
use ordo_domain::payment::Payment;
use serde_json::{json, Map, Value};

use super::int_param;
use crate::auth::{self, Allowed};
use crate::extract::PathId;
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

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (collection, kind) in [
        ("orders", Kind::Order),
        ("payments", Kind::Payment),
        ("customers", Kind::Customer),
    ] {
        router = router
            .route(
                &format!("/v1/{collection}/{{id}}/history"),
                get(
                    move |State(app): State<AppState>,
                          _: Allowed<auth::Auditors>,
                          PathId(id): PathId,
                          Query(q): Query<HashMap<String, String>>| async move {
                        history(app, kind, id.to_string(), q).await
                    },
                ),
            )
            .route(
                &format!("/v1/{collection}/{{id}}/state"),
                get(
                    move |State(app): State<AppState>,
                          _: Allowed<auth::Auditors>,
                          PathId(id): PathId,
                          Query(q): Query<HashMap<String, String>>| async move {
                        state(app, kind, id.to_string(), q).await
                    },
                ),
            );
    }
    router
}

async fn history(
    app: AppState,
    kind: Kind,
    id: String,
    q: HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    let after = int_param(&q, "after")?.unwrap_or(0);
    let limit = int_param(&q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadQuery {
            param: "limit",
            detail: format!("must be from 1 to {MAX_LIMIT}"),
        });
    }
    let mut events =
        history::read_stream(&app.pool, kind.aggregate_type(), &id, after, limit + 1).await?;
    if events.is_empty() && after == 0 {
        return Err(ApiError::NotFound(format!(
            "no {} has this id",
            kind.aggregate_type()
        )));
    }
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_cursor = match (more, events.last()) {
        (true, Some(last)) => Value::String(last.sequence.to_string()),
        _ => Value::Null,
    };
    let items: Vec<Value> = events.into_iter().map(history_item).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

fn history_item(event: RecordedEvent) -> Value {
    let meta = |key: &str| event.metadata.get(key).cloned().unwrap_or(Value::Null);
    let mut actor = Map::new();
    actor.insert("name".into(), meta("actor_name"));
    actor.insert("role".into(), meta("actor_role"));
    json!({
        "sequence": event.sequence,
        "position": event.position,
        "event_id": event.event_id,
        "type": event.event_type,
        "schema_version": event.schema_version.parse::<u32>().map(Value::from).unwrap_or(Value::String(event.schema_version.clone())),
        "recorded_at": event.recorded_at,
        "data": event.data,
        "metadata": {
            "actor": actor,
            "correlation_id": meta("correlation_id"),
            "causation_id": meta("causation_id"),
            "request_id": meta("request_id"),
            "idempotency_key": meta("idempotency_key"),
            "traceparent": meta("traceparent"),
        },
    })
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
    let (body, folded) = match kind {
        Kind::Order => {
            let s = history::fold_until::<Order>(&app.pool, &id, until).await?;
            (views::order(&s.state, s.version), s.version)
        }
        Kind::Payment => {
            let s = history::fold_until::<Payment>(&app.pool, &id, until).await?;
            (views::payment(&s.state, s.version), s.version)
        }
        Kind::Customer => {
            let s = history::fold_until::<Customer>(&app.pool, &id, until).await?;
            (views::customer(&s.state, s.version), s.version)
        }
    };
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

//! `/console/orders/{id}` (support, admin — the API's auditors): the order's time line, its
//! state at a version or an instant, and the notifications and webhook deliveries it caused.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use ordo_commands::history::Until;
use ordo_workers::notification::NotificationList;
use serde_json::Value;
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::Signed;
use super::timeline::{self, Step};
use super::ConsoleError;
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/console/orders/{id}", get(show))
}

const MONEY: [&str; 5] = ["total", "amount", "authorized", "captured", "refunded"];

/// A state field's value, money in major units with the currency.
fn value(field: &str, v: &Value, state: &Value) -> Markup {
    match (v.as_i64(), state["currency"].as_str()) {
        (Some(n), Some(currency)) if MONEY.contains(&field) => {
            html! { (layout::money(n, currency)) }
        }
        _ if field.ends_with("_at") => layout::time_value(v),
        _ if v.is_object() || v.is_array() => layout::json(v),
        _ => html! { (layout::text(v)) },
    }
}

fn parse_at(raw: &str) -> Result<DateTime<Utc>, ConsoleError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            // `<input type="datetime-local">` sends no zone; the form says it is UTC.
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
                .map(|t| t.and_utc())
        })
        .map_err(|_| ConsoleError::BadInput("`at` must be a time such as 2026-01-31T12:00".into()))
}

async fn show(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Auditors>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, ConsoleError> {
    let id = Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound("not an order id".into()))?;
    super::visible_stream(&app, &session, "order", &id.to_string()).await?;
    let steps = timeline::order_timeline(app.commands.keys(), id).await?;
    if steps.is_empty() {
        return Err(ConsoleError::NotFound("No order has this id.".into()));
    }
    let (current, version) = timeline::state(
        app.commands.keys(),
        "order",
        &id.to_string(),
        Until::Version(u64::MAX),
    )
    .await?;
    let until = match (
        q.get("version").filter(|v| !v.is_empty()),
        q.get("at").filter(|v| !v.is_empty()),
    ) {
        (Some(v), _) => Some(Until::Version(v.parse().map_err(|_| {
            ConsoleError::BadInput("`version` must be a whole number".into())
        })?)),
        (None, Some(at)) => Some(Until::Time(parse_at(at)?)),
        (None, None) => None,
    };
    let at_point = match until {
        Some(until) => {
            Some(timeline::state(app.commands.keys(), "order", &id.to_string(), until).await?)
        }
        None => None,
    };
    let notifications = if session.may::<auth::NotificationReaders>() {
        Some(
            ordo_workers::notification::list(
                &app.pool,
                app.commands.keys(),
                session.caller.scope(),
                Some(id),
                None,
                100,
            )
            .await?,
        )
    } else {
        None
    };
    let event_ids: Vec<Uuid> = steps.iter().map(|s| s.event.event_id).collect();
    let deliveries = deliveries(&app, &event_ids).await?;
    let index = timeline::index(&steps);
    let channel = steps
        .iter()
        .find(|s| s.stream == "order")
        .and_then(|s| s.event.metadata.get("channel"))
        .and_then(Value::as_str)
        .unwrap_or(ordo_commands::channels::DEFAULT)
        .to_owned();
    let body = html! {
        section.summary {
            p { "Status " strong.status { (layout::text(&current["status"])) }
                " · payment " (layout::text(&current["payment_status"]))
                " · total " (value("total", &current["total"], &current))
                " · version " (version)
                " · channel " span.channel { (channel) }
                " · customer " a href=(format!("/console/customers/{}", layout::text(&current["customer_id"]))) {
                    (layout::text(&current["customer_id"])) } }
        }
        section aria-labelledby="tl" {
            h2 #tl { "Time line" }
            ol.timeline {
                @for step in &steps { (render_step(step, &steps, &index)) }
            }
        }
        section aria-labelledby="at" {
            h2 #at { "State at a version or an instant" }
            form.inline method="get" {
                label for="version" { "Version" }
                input #version type="number" name="version" min="1" max=(version) value=[q.get("version")];
                label for="at-time" { "or instant (UTC)" }
                input #at-time type="datetime-local" name="at" step="1" value=[q.get("at")];
                button type="submit" { "Show" }
            }
            @if let Some((state, v)) = &at_point {
                @if *v == 0 { p.empty { "The order did not exist yet." } }
                @else { p { "At version " (v) ":" } (layout::fields(state)) }
            }
        }
        @if let Some(list) = &notifications {
            section aria-labelledby="nt" {
                h2 #nt { "Notifications" }
                (notification_table(list))
            }
        }
        section aria-labelledby="wd" {
            h2 #wd { "Webhook deliveries" }
            @if deliveries.is_empty() { (layout::none("deliveries")) }
            @else {
                table {
                    thead { tr { th { "Event" } th { "Endpoint" } th { "Status" } th { "Attempts" } th { "Last answer" } th { "Since" } } }
                    tbody { @for d in &deliveries { tr {
                        td { (d.event_type) } td { a href=(format!("/console/webhooks/{}", d.endpoint_id)) { (d.url) } }
                        td { (d.status) } td.num { (d.attempts) }
                        td { (d.last_status_code.map(|c| c.to_string()).unwrap_or_default()) " " (d.last_error.clone().unwrap_or_default()) }
                        td { (layout::time(&d.created_at)) }
                    } } }
                }
            }
        }
    };
    Ok(page(&session, &format!("Order {id}"), Nav::Search, body))
}

fn render_step(step: &Step, steps: &[Step], index: &HashMap<String, usize>) -> Markup {
    let e = &step.event;
    let causation = step.meta("causation_id").unwrap_or("");
    let cause = index.get(causation).map(|i| &steps[*i]);
    html! {
        li.step id=(format!("ev-{}", e.event_id)) {
            div.head {
                strong.type { (e.event_type) }
                " " (layout::time(&e.recorded_at))
                span.stream { " · " (step.stream) " " code { (step.stream_id) } " v" (e.sequence) " · position " (e.position) }
            }
            dl.meta {
                dt { "Actor" } dd { (step.meta("actor_name").unwrap_or("—")) " (" (step.meta("actor_role").unwrap_or("—")) ")" }
                dt { "Request" } dd { code { (step.meta("request_id").unwrap_or("—")) } }
                dt { "Correlation" } dd { code { (step.meta("correlation_id").unwrap_or("—")) } }
                dt { "Caused by" } dd {
                    @if let Some(cause) = cause {
                        a.cause href=(format!("#ev-{}", cause.event.event_id)) { (cause.event.event_type) " (position " (cause.event.position) ")" }
                    } @else { code { (if causation.is_empty() { "—" } else { causation }) } }
                }
            }
            @if !step.changes.is_empty() {
                table.changes {
                    caption { "Changed" }
                    thead { tr { th scope="col" { "Field" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody { @for (field, before, after) in &step.changes {
                        tr { th scope="row" { (field) } td { (value(field, before, &step.after)) } td { (value(field, after, &step.after)) } }
                    } }
                }
            }
            details { summary { "Event data" } (layout::json(&e.data)) }
        }
    }
}

/// The notifications list (as `GET /v1/notifications` serves it) as a table.
pub fn notification_table(list: &NotificationList) -> Markup {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    html! {
        @if list.items.is_empty() { (layout::none("notifications")) }
        @else {
            table {
                thead { tr { th { "Kind" } th { "To" } th { "Subject" } th { "Status" } th { "At" } } }
                tbody { @for n in &list.items { tr {
                    td { (n.kind) } td { (or_dash(&n.recipient)) }
                    td { (or_dash(&n.subject)) } td { (n.status) }
                    td { (layout::time(&n.created_at)) }
                } } }
            }
        }
    }
}

/// A webhook delivery of one of the order's events (the outbox row, with its endpoint).
#[derive(sqlx::FromRow)]
struct Delivery {
    endpoint_id: Uuid,
    url: String,
    event_type: String,
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

/// The webhook deliveries of these events, oldest first.
async fn deliveries(app: &AppState, event_ids: &[Uuid]) -> Result<Vec<Delivery>, ConsoleError> {
    Ok(sqlx::query_as(
        "SELECT o.endpoint_id, e.url, o.event_type, o.status, o.attempts, o.last_status_code,
                o.last_error, o.created_at
           FROM integration.outbox o JOIN integration.endpoints e ON e.id = o.endpoint_id
          WHERE o.event_id = ANY($1) ORDER BY o.created_at LIMIT 500",
    )
    .bind(event_ids)
    .fetch_all(&app.pool)
    .await?)
}

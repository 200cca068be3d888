//! `/console/webhooks` (the API's webhook admins): endpoints and their delivery attempts.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use ordo_workers::integration;
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::Signed;
use super::ConsoleError;
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/webhooks", get(list))
        .route("/console/webhooks/{id}", get(deliveries))
}

type Endpoint = (
    Uuid,
    String,
    Vec<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i64,
    i64,
);

async fn list(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
) -> Result<Markup, ConsoleError> {
    // The secret is never read here: it was shown once, at registration.
    let endpoints: Vec<Endpoint> = sqlx::query_as(
        "SELECT e.id, e.url, e.event_types, e.created_at, e.disabled_at,
                count(d.id) FILTER (WHERE d.ok), count(d.id) FILTER (WHERE NOT d.ok)
           FROM integration.endpoints e LEFT JOIN integration.deliveries d ON d.endpoint_id = e.id
          GROUP BY e.id ORDER BY e.created_at LIMIT 500",
    )
    .fetch_all(&app.pool)
    .await?;
    let body = html! {
        @if endpoints.is_empty() { (layout::none("webhook endpoints")) }
        @else {
            table {
                thead { tr { th { "Endpoint" } th { "Events" } th { "State" } th { "Delivered" } th { "Failed attempts" } th { "Since" } } }
                tbody { @for (id, url, types, created, disabled, ok, failed) in &endpoints { tr {
                    td { a href=(format!("/console/webhooks/{id}")) { (url) } }
                    td { (types.join(", ")) }
                    td { @if let Some(at) = disabled { "disabled " (layout::time(at)) } @else { "enabled" } }
                    td.num { (ok) } td.num { (failed) }
                    td { (layout::time(created)) }
                } } }
            }
        }
        p.hint { "Register endpoints with POST /v1/webhooks; the secret is shown once, there." }
    };
    Ok(page(&session, "Webhooks", Nav::Webhooks, body))
}

async fn deliveries(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound("not an endpoint id".into()))?;
    let page_json = integration::deliveries(&app.pool, id, 200)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("No webhook endpoint has this id.".into()))?;
    let items = page_json["items"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if items.is_empty() { (layout::none("deliveries")) }
        @else {
            table {
                thead { tr { th { "Event" } th { "Type" } th { "Attempt" } th { "Result" } th { "Time" } th { "At" } } }
                tbody { @for d in &items { tr {
                    td { code { (layout::text(&d["event_id"])) } }
                    td { (layout::text(&d["event_type"])) }
                    td.num { (layout::text(&d["attempt"])) }
                    td { @if d["ok"].as_bool() == Some(true) { "ok " } @else { span.error { "failed " } }
                         (layout::text(&d["status_code"])) " " (d["error"].as_str().unwrap_or("")) }
                    td.num { (layout::text(&d["duration_ms"])) " ms" }
                    td { (layout::time_value(&d["created_at"])) }
                } } }
            }
        }
        p { a href="/console/webhooks" { "All endpoints" } }
    };
    Ok(page(&session, "Webhook deliveries", Nav::Webhooks, body))
}

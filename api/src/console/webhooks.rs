//! `/console/webhooks` (the API's webhook admins): endpoints with their state and queue;
//! disable, enable, rotate the secret (shown once), send a test; an endpoint's deliveries,
//! retry one. Every action is the `ordo_workers::integration` function the API calls.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use ordo_workers::integration::{endpoints, outbox};
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::{Session, Signed};
use super::{see_other, ConsoleError, Form};
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/webhooks", get(list))
        .route("/console/webhooks/{id}", get(deliveries))
        .route("/console/webhooks/{id}/{action}", post(act))
        .route(
            "/console/webhooks/{id}/deliveries/{delivery}/retry",
            post(retry),
        )
}

fn uuid(raw: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw).map_err(|_| ConsoleError::NotFound("not an id".into()))
}

fn button(session: &Session, action: String, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (layout::csrf(session))
            button type="submit" { (label) }
        }
    }
}

async fn list(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
) -> Result<Markup, ConsoleError> {
    render(&app, &session, None).await
}

async fn render(
    app: &AppState,
    session: &Session,
    secret: Option<(Uuid, String)>,
) -> Result<Markup, ConsoleError> {
    let list = endpoints::list(&app.pool).await?;
    let body = html! {
        @if let Some((id, secret)) = &secret {
            div.created role="status" {
                p { "New signing secret of " code { (id) } " — copy it now, it is not shown again:" }
                input #new-secret type="text" readonly value=(secret) aria-label="The new secret";
            }
        }
        @if list.items.is_empty() { (layout::none("webhook endpoints")) }
        @else {
            table {
                thead { tr { th { "Endpoint" } th { "Events" } th { "Channel" } th { "State" } th { "Pending" } th { "Delivered" } th { "Failed" } th { "Actions" } } }
                tbody { @for e in &list.items { tr {
                    td { a href=(format!("/console/webhooks/{}", e.id)) { (e.url) }
                         @if let Some(d) = &e.description { br; small { (d) } } }
                    td { (e.event_types.join(", ")) }
                    td.channel { @if let Some(c) = &e.channel { (c) } @else { em { "all" } } }
                    td { (e.state)
                         @if let Some(at) = &e.failing_since { br; small { "failing since " (layout::time(at)) } }
                         @if let Some(r) = &e.disabled_reason { br; small { "disabled (" (r) ")" } } }
                    td.num { (e.pending) } td.num { (e.delivered) } td.num { (e.failed) }
                    td.actions {
                        @if e.disabled_at.is_some() { (button(session, format!("/console/webhooks/{}/enable", e.id), "Enable")) }
                        @else { (button(session, format!("/console/webhooks/{}/disable", e.id), "Disable")) }
                        (button(session, format!("/console/webhooks/{}/rotate", e.id), "Rotate secret"))
                        (button(session, format!("/console/webhooks/{}/test", e.id), "Send test"))
                    }
                } } }
            }
        }
        p.hint { "Register endpoints with POST /v1/webhooks; the secret is shown once, there." }
    };
    Ok(page(session, "Webhooks", Nav::Webhooks, body))
}

/// Disable, enable, rotate the secret (shown once on the answer), or send a test.
async fn act(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let id = uuid(&id)?;
    let missing = || ConsoleError::NotFound("No webhook endpoint has this id.".into());
    match action.as_str() {
        "disable" | "enable" => {
            endpoints::set_enabled(&app.pool, id, action == "enable")
                .await?
                .ok_or_else(missing)?;
        }
        "test" => {
            outbox::send_test(&app.pool, id)
                .await?
                .ok_or_else(missing)?;
            return Ok(see_other(&format!("/console/webhooks/{id}")));
        }
        "rotate" => {
            let secret = endpoints::rotate_secret(&app.pool, id)
                .await?
                .ok_or_else(missing)?;
            return Ok(render(&app, &session, Some((id, secret)))
                .await?
                .into_response());
        }
        _ => return Err(ConsoleError::NotFound("No such action.".into())),
    }
    Ok(see_other("/console/webhooks"))
}

async fn deliveries(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let id = uuid(&id)?;
    let list = outbox::deliveries(&app.pool, id, None, 200)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("No webhook endpoint has this id.".into()))?;
    let body = html! {
        @if list.items.is_empty() { (layout::none("deliveries")) }
        @else {
            table {
                thead { tr { th { "Event" } th { "Type" } th { "Status" } th { "Attempts" } th { "Last answer" } th { "Created" } th {} } }
                tbody { @for d in &list.items { tr {
                    td { code { (d.event_id) } }
                    td { (d.event_type) }
                    td { (d.status) @if let Some(at) = &d.next_attempt_at { br; small { "next " (layout::time(at)) } } }
                    td.num { (d.attempts) }
                    td { (d.last_status_code.map(|c| c.to_string()).unwrap_or_default()) " "
                         span.error { (d.last_error.clone().unwrap_or_default()) } }
                    td { (layout::time(&d.created_at)) }
                    td { (button(&session, format!("/console/webhooks/{id}/deliveries/{}/retry", d.id), "Retry now")) }
                } } }
            }
        }
        p { a href="/console/webhooks" { "All endpoints" } }
    };
    Ok(page(&session, "Webhook deliveries", Nav::Webhooks, body))
}

async fn retry(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::WebhookAdmins>,
    Path((id, delivery)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let (id, delivery) = (uuid(&id)?, uuid(&delivery)?);
    outbox::retry_now(&app.pool, id, delivery)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("This endpoint has no such delivery.".into()))?;
    Ok(see_other(&format!("/console/webhooks/{id}")))
}

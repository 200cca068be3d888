//! `/console/customers/{id}` (support, admin): the customer 360 — profile, orders, payments,
//! spent per currency, notes (and adding one), notifications; for admins, erasing the
//! customer's personal data (ADR 0020), confirmed by typing the customer's id.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use maud::{html, Markup};
use ordo_commands::history;
use ordo_commands::{Actor, CommandMetadata};
use ordo_domain::customer::CustomerCommand;
use ordo_domain::values::Text;
use ordo_projections::queries;
use ordo_projections::views::{OrderView, PaymentView};
use serde_json::Value;
use uuid::Uuid;

use super::layout::{self, page, Nav};
use super::session::{Session, Signed};
use super::{see_other, ConsoleError, Form};
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/customers/{id}", get(show))
        .route("/console/customers/{id}/notes", post(add_note))
        .route("/console/customers/{id}/erase", post(erase))
}

fn customer_id(raw: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw).map_err(|_| ConsoleError::NotFound("not a customer id".into()))
}

async fn show(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Auditors>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let id = customer_id(&id)?;
    super::visible_stream(&app, &session, "customer", &id.to_string()).await?;
    let events =
        history::read_stream(app.commands.keys(), "customer", &id.to_string(), 0, 1000).await?;
    let Some(registered) = events.first() else {
        return Err(ConsoleError::NotFound("No customer has this id.".into()));
    };
    let read = crate::routes::read_error;
    let profile = queries::customer(&app.pool, app.commands.keys(), session.caller.scope(), id)
        .await
        .map_err(read)?;
    let orders = queries::orders(&app.pool, session.caller.scope(), Some(id), None, None, 200)
        .await
        .map_err(read)?
        .items;
    let mut payments = Vec::new();
    for order in &orders {
        let page = queries::payments(&app.pool, session.caller.scope(), Some(order.id), None, 50)
            .await
            .map_err(read)?;
        payments.extend(page.items);
    }
    let notes: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "customer.note_added")
        .collect();
    let notifications = if session.may::<auth::NotificationReaders>() {
        Some(
            ordo_workers::notification::list(
                &app.pool,
                app.commands.keys(),
                session.caller.scope(),
                None,
                Some(id),
                100,
            )
            .await?,
        )
    } else {
        None
    };
    let erased = events.iter().find(|e| e.event_type == "customer.erased");
    let name = layout::text(&registered.data["name"]);
    let body = html! {
        section.profile {
            dl.fields {
                dt { "Name" } dd.name { (name) }
                dt { "E-mail" } dd { (layout::text(&registered.data["email"])) }
                dt { "Phone" } dd { (layout::text(&registered.data["phone"])) }
                dt { "Registered" } dd { (layout::time(&registered.recorded_at)) }
                dt { "Channel" } dd.channel { (layout::text(registered.metadata.get("channel").unwrap_or(&Value::from(ordo_commands::channels::DEFAULT)))) }
                @if let Some(p) = &profile {
                    dt { "Orders" } dd { (p.order_count) " (" (p.open_orders) " open, " (p.cancelled_count) " cancelled)" }
                }
            }
        }
        @if let Some(spent) = profile.as_ref().map(|p| &p.spent).filter(|s| !s.is_empty()) {
            section aria-labelledby="sp" {
                h2 #sp { "Spent" }
                table {
                    thead { tr { th { "Currency" } th { "Gross" } th { "Refunded" } th { "Net" } th { "Average order" } } }
                    tbody { @for (currency, s) in spent { tr {
                        td { (currency) }
                        @for v in [s.gross, s.refunded, s.net, s.average_order_value] {
                            td.num { (layout::money(v, currency)) }
                        }
                    } } }
                }
            }
        }
        section aria-labelledby="or" {
            h2 #or { "Orders" }
            @if orders.is_empty() { (layout::none("orders")) } @else { (order_table(&orders)) }
        }
        section aria-labelledby="pa" {
            h2 #pa { "Payments" }
            @if payments.is_empty() { (layout::none("payments")) } @else { (payment_table(&payments)) }
        }
        section aria-labelledby="no" {
            h2 #no { "Notes" }
            @if notes.is_empty() { (layout::none("notes")) }
            ul.notes { @for n in &notes { li {
                p.note { (layout::text(&n.data["text"])) }
                small { (n.metadata.get("actor_name").map(layout::text).unwrap_or_default()) ", " (layout::time(&n.recorded_at)) }
            } } }
            @if erased.is_none() && session.may::<auth::Notes>() { (note_form(&session, id)) }
        }
        @if let Some(list) = &notifications {
            section aria-labelledby="nt" { h2 #nt { "Notifications" } (super::order::notification_table(list)) }
        }
        @if let Some(e) = erased {
            section.erased aria-labelledby="er" {
                h2 #er { "Personal data erased" }
                p { "Erased " (layout::time(&e.recorded_at)) " by "
                    (e.metadata.get("actor_name").map(layout::text).unwrap_or_default())
                    ". Orders, payments and analytics are kept; the e-mail, name, phone, notes and shipping addresses can never be read again." }
            }
        } @else if session.may::<auth::Erasers>() {
            (erase_form(&session, id))
        }
    };
    Ok(page(
        &session,
        &format!("Customer {name}"),
        Nav::Search,
        body,
    ))
}

fn note_form(session: &Session, id: Uuid) -> Markup {
    html! {
        form.note method="post" action=(format!("/console/customers/{id}/notes")) {
            (layout::csrf(session))
            label for="note" { "Add a note" }
            textarea #note name="text" rows="3" maxlength="2000" required {}
            button type="submit" { "Add note" }
        }
    }
}

/// Erasure cannot be undone, so the form asks for the customer's id typed out.
fn erase_form(session: &Session, id: Uuid) -> Markup {
    html! {
        section.erase aria-labelledby="er" {
            h2 #er { "Erase personal data" }
            p { "Destroys this customer's data key: their e-mail, name, phone, notes and shipping addresses "
                "read \"[erased]\" from then on, and nothing more is mailed to them. Orders, payments and "
                "analytics are kept. This cannot be undone." }
            form.erase method="post" action=(format!("/console/customers/{id}/erase")) {
                (layout::csrf(session))
                label for="confirm" { "Type the customer's id (" code { (id) } ") to confirm" }
                input #confirm name="confirm" type="text" autocomplete="off" spellcheck="false" required;
                button.danger type="submit" { "Erase personal data" }
            }
        }
    }
}

fn order_table(orders: &[OrderView]) -> Markup {
    html! {
        table {
            thead { tr { th { "Order" } th { "Channel" } th { "Status" } th { "Payment" } th { "Total" } th { "Placed" } } }
            tbody { @for o in orders { tr {
                td { a href=(format!("/console/orders/{}", o.id)) { code { (o.id) } } }
                td { (o.channel) }
                td { (o.status.as_str()) } td { (o.payment_status) }
                td.num { (layout::money(o.total, &o.currency)) }
                td { (layout::time(&o.placed_at)) }
            } } }
        }
    }
}

fn payment_table(payments: &[PaymentView]) -> Markup {
    html! {
        table {
            thead { tr { th { "Payment" } th { "Channel" } th { "Order" } th { "Status" } th { "Amount" } th { "Captured" } th { "Refunded" } } }
            tbody { @for p in payments { tr {
                td { code { (p.id) } }
                td { (p.channel) }
                td { a href=(format!("/console/orders/{}", p.order_id)) { "order" } }
                td { (p.status) }
                @for v in [p.amount, p.captured, p.refunded] { td.num { (layout::money(v, &p.currency)) } }
            } } }
        }
    }
}

/// Add a note as the signed-in key, with the request's id in the event's metadata, exactly
/// as `POST /v1/customers/{id}/notes` records it.
async fn add_note(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Notes>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let id = customer_id(&id)?;
    let text: Text = serde_json::from_value(Value::String(form.text("text").unwrap_or("").into()))
        .map_err(|e| ConsoleError::BadInput(format!("The note {e}.")))?;
    let meta = command_metadata(&session, &headers);
    let cmd = CustomerCommand::AddNote {
        note_id: Uuid::now_v7(),
        text,
        at: Utc::now(),
    };
    app.commands.customer(id, None, cmd, &meta).await?;
    Ok(see_other(&format!("/console/customers/{id}#no")))
}

/// Erase the customer's personal data (admins only) exactly as `POST /v1/customers/{id}/erase`
/// does, once the form's `confirm` field is the customer's id.
async fn erase(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Erasers>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, ConsoleError> {
    session.check_csrf(&form)?;
    let id = customer_id(&id)?;
    if form.text("confirm") != Some(id.to_string().as_str()) {
        return Err(ConsoleError::BadInput(format!(
            "Nothing was erased: type the customer's id ({id}) to confirm the erasure."
        )));
    }
    let meta = command_metadata(&session, &headers);
    app.commands.erase_customer(id, Utc::now(), &meta).await?;
    Ok(see_other(&format!("/console/customers/{id}")))
}

/// The metadata of a command sent from the console: the signed-in key as the actor, the
/// request's id (or a fresh one), as the API records it.
fn command_metadata(session: &Session, headers: &HeaderMap) -> CommandMetadata {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    CommandMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::parse_str(&request_id).unwrap_or_else(|_| Uuid::new_v4()),
        actor: Actor {
            key_id: Some(session.caller.key_id),
            name: session.caller.name.clone(),
            role: session.caller.role.as_str().to_owned(),
        },
        request_id,
        idempotency_key: None,
        idempotent: None,
        traceparent: None,
        channel: session.caller.channel.clone(),
    }
}

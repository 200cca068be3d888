//! The home page and the one search box: an order id, a payment id, a customer id or an
//! e-mail address leads to the order's timeline or the customer's page.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use ordo_commands::history;
use ordo_projections::views::CustomerView;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{page, Nav};
use super::session::{Session, Signed};
use super::{see_other, signin, ConsoleError};
use crate::auth;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/console/search", get(search))
}

fn search_box(q: &str) -> Markup {
    html! {
        form.search method="get" action="/console/search" role="search" {
            label for="q" { "Order id, payment id, customer id or e-mail" }
            div.row {
                input #q type="search" name="q" value=(q) required maxlength="320";
                button type="submit" { "Find" }
            }
        }
    }
}

/// `/console`: the search box for those who may read the audit trail, links for the rest.
pub async fn home(Signed(session, _): Signed<auth::Readers>) -> Markup {
    let body = if session.may::<auth::Auditors>() {
        search_box("")
    } else if session.may::<auth::ProjectionReaders>() {
        html! { p { "Start with the " a href="/console/projections" { "projections" } "." } }
    } else {
        signin::nothing_here()
    };
    page(&session, "Console", Nav::Search, body)
}

#[derive(Deserialize)]
struct Params {
    q: Option<String>,
}

/// Where an id or an e-mail address leads, if anywhere.
enum Found {
    Order(Uuid),
    Customer(Uuid),
    Customers(Vec<CustomerView>),
    Nothing,
}

async fn find(app: &AppState, session: &Session, q: &str) -> Result<Found, ConsoleError> {
    if let Ok(id) = Uuid::parse_str(q) {
        // The log, not a read model: an id is found even before its projection caught up.
        let kind = history::stream_kind(&app.pool, id).await?;
        return Ok(match kind.as_deref() {
            Some("order") => Found::Order(id),
            Some("customer") => Found::Customer(id),
            Some("payment") => {
                let first =
                    history::read_stream(app.commands.keys(), "payment", &id.to_string(), 0, 1)
                        .await?;
                first
                    .first()
                    .and_then(|e| e.data.get("order_id")?.as_str()?.parse().ok())
                    .map_or(Found::Nothing, Found::Order)
            }
            _ => Found::Nothing,
        });
    }
    if q.contains('@') && !q.contains('\0') {
        let page =
            crate::routes::customers::customers(app, session.caller.scope(), Some(q), None, 20)
                .await
                .map_err(crate::routes::read_error)?;
        return Ok(match page.items.as_slice() {
            [] => Found::Nothing,
            [one] => Found::Customer(one.id),
            _ => Found::Customers(page.items),
        });
    }
    Ok(Found::Nothing)
}

async fn search(
    State(app): State<AppState>,
    Signed(session, _): Signed<auth::Auditors>,
    Query(params): Query<Params>,
) -> Result<Response, ConsoleError> {
    let q = params.q.unwrap_or_default();
    let q = q.trim();
    if q.is_empty() || q.len() > 320 {
        return Ok(results(
            &session,
            q,
            html! { p { "Type an id or an e-mail address." } },
        ));
    }
    Ok(match find(&app, &session, q).await? {
        Found::Order(id) => see_other(&format!("/console/orders/{id}")),
        Found::Customer(id) => see_other(&format!("/console/customers/{id}")),
        Found::Customers(items) => results(
            &session,
            q,
            html! {
                ul.results {
                    @for c in &items {
                        li { a href=(format!("/console/customers/{}", c.id)) {
                            (c.name.as_deref().unwrap_or("—")) " — " (c.email.as_deref().unwrap_or("—")) }
                            " (" (c.channel) ")" }
                    }
                }
            },
        ),
        Found::Nothing => results(
            &session,
            q,
            html! { p.empty { "Nothing found for " q { (q) } "." } },
        ),
    })
}

fn results(session: &Session, q: &str, body: Markup) -> Response {
    page(
        session,
        "Search",
        Nav::Search,
        html! { (search_box(q)) (body) },
    )
    .into_response()
}

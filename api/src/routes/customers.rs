//! `/v1/customers`: register, add a support note; read one.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use ordo_commands::channels::ChannelId;
use ordo_domain::customer::{self, CustomerCommand};
use ordo_domain::values::{Email, Text};
use ordo_projections::queries::ByEmail;
use ordo_projections::views::{CustomerView, Page};
use ordo_projections::{queries, Projection};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{limit_param, page_json, text_param, uuid_param, wait_for_position};
use crate::auth::{self, Allowed, Policy as _};
use crate::extract::{CommandBody, CommandHeaders, CreationHeaders, PathId, QueryParams};
use crate::openapi::RestrictedReadProblems;
use crate::openapi::{params, Added, Applied, CommandProblems, Created};
use crate::openapi::{CreateProblems, NotesCapped, ReadOneProblems};
use crate::respond::{run_command, Success};
use crate::validate::{request_body, Empty};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(show))
        .routes(routes!(add_note))
        .routes(routes!(erase))
}

request_body! {
    pub struct RegisterCustomer {
        /// Generated when absent.
        pub customer_id: Option<Uuid>,
        pub email: Email,
        pub name: Text,
        pub phone: Option<Text>,
        /// The sales channel to create it in: only a global key may name one (default
        /// `default`); a key scoped to a channel creates in its own (naming another is 403).
        pub channel: Option<ChannelId>,
    }
}

request_body! {
    pub struct AddNote {
        pub text: Text,
    }
}

/// Register a customer (storefront, admin). `customer_id` is generated when absent.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", request_body = RegisterCustomer,
    params(CreationHeaders), responses(Created, CreateProblems))]
async fn register(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    CreationHeaders(headers): CreationHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/customers",
    };
    let (json, commands, scope) = (&body.json, &app.commands, (&app, &caller));
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        success,
        |mut meta| async move {
            let request = RegisterCustomer::read(json)?;
            meta.channel =
                Some(super::channels::creation_channel(scope.0, scope.1, request.channel).await?);
            let cmd = customer::RegisterCustomer {
                customer_id: request.customer_id.unwrap_or_else(Uuid::now_v7),
                email: request.email,
                name: request.name,
                phone: request.phone,
                registered_at: Utc::now(),
            };
            Ok(commands.register_customer(cmd, &meta).await?)
        },
    )
    .await
}

/// Add a support note to a customer (support, admin).
#[utoipa::path(post, path = "/v1/customers/{id}/notes", tag = "customers", request_body = AddNote,
    params(("id" = Uuid, Path, description = "The customer's id"), CommandHeaders), responses(Added, CommandProblems, NotesCapped))]
async fn add_note(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Notes>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/customers",
    };
    let (json, commands) = (&body.json, &app.commands);
    run_command(&app, &caller, &headers, &body, success, |meta| async move {
        let cmd = CustomerCommand::AddNote {
            note_id: Uuid::now_v7(),
            text: AddNote::read(json)?.text,
            at: Utc::now(),
        };
        Ok(commands.customer(id, headers.if_match, cmd, &meta).await?)
    })
    .await
}

/// Erase a customer's personal data (admin only; ADR 0020): their data key is destroyed, so
/// the e-mail, name, phone, shipping addresses and notes sealed with it can never be read
/// again, and `customer.erased` is recorded. Reads show "[erased]" in their place from then
/// on, also for fields recorded in clear before encryption; read models drop them; no
/// e-mail is sent to the customer any more. Erasing again answers 200 with the erasure
/// already recorded.
#[utoipa::path(post, path = "/v1/customers/{id}/erase", tag = "customers", request_body = Empty,
    params(("id" = Uuid, Path, description = "The customer's id"), CommandHeaders), responses(Applied, CommandProblems))]
async fn erase(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Erasers>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    let (json, commands) = (&body.json, &app.commands);
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        Success::Ok,
        |meta| async move {
            Empty::read(json)?;
            Ok(commands.erase_customer(id, Utc::now(), &meta).await?)
        },
    )
    .await
}

/// One customer's 360 view from the CRM read model (every role).
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", params(("id" = Uuid, Path, description = "The customer's id"), params::ReadOne),
    responses((status = 200, description = "The customer", body = CustomerView), ReadOneProblems))]
async fn show(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    PathId(id): PathId,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Customers, &q).await?;
    let customer = queries::customer(&app.pool, app.commands.keys(), caller.scope(), id)
        .await
        .map_err(super::read_error)?
        .ok_or_else(|| ApiError::NotFound("no customer has this id".into()))?;
    Ok(axum::Json(customer).into_response())
}

/// Customers, oldest id first, cursor-paginated: the CRM list, for support and admins. With
/// `email=` it is a lookup by exact e-mail address (case-insensitive), which storefronts and
/// analysts may make too — a storefront finds its own customer, never pages through all.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(params::CustomerList),
    responses((status = 200, description = "A page of customers", body = Page<CustomerView>), RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
    let email = text_param(&q, "email")?;
    if email.is_none() && !auth::CustomerListers::admits(caller.role) {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str(),
        });
    }
    wait_for_position(&app, Projection::Customers, &q).await?;
    let page = customers(
        &app,
        channel.as_deref(),
        email,
        uuid_param(&q, "cursor")?,
        limit_param(&q)?,
    )
    .await
    .map_err(super::read_error)?;
    Ok(page_json(page))
}

/// [`queries::customers`], looking an e-mail address up through the key store's blind index
/// when encryption is on (ADR 0020), else through the read model's clear text.
pub(crate) async fn customers(
    app: &AppState,
    channel: Option<&str>,
    email: Option<&str>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Page<CustomerView>, sqlx::Error> {
    let indexed = match email {
        Some(email) => app.commands.keys().customers_by_email(email).await?,
        None => None,
    };
    let by_email = match (&indexed, email) {
        (Some(ids), _) => Some(ByEmail::Indexed(ids)),
        (None, Some(email)) => Some(ByEmail::Clear(email)),
        (None, None) => None,
    };
    queries::customers(
        &app.pool,
        app.commands.keys(),
        channel,
        by_email,
        cursor,
        limit,
    )
    .await
}

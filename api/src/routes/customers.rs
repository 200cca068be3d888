//! `/v1/customers`: register, add a support note; read one.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use ordo_domain::customer::{CustomerCommand, RegisterCustomer};
use ordo_domain::values::{Email, Text};
use ordo_projections::{queries, Projection};
use serde_json::Value;
use uuid::Uuid;

use super::{limit_param, page_json, uuid_param, wait_for_position, Params};
use crate::auth::{self, Allowed};
use crate::extract::{CommandBody, CommandHeaders, PathId};
use crate::respond::{run_command, Success};
use crate::validate::Validation;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/customers", post(register).get(list))
        .route("/v1/customers/{id}", get(show))
        .route("/v1/customers/{id}/notes", post(add_note))
}

async fn register(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/customers",
    };
    let (json, commands) = (&body.json, &app.commands);
    run_command(&app, &caller, &headers, &body, success, |meta| async move {
        let cmd = parse_register(json)?;
        Ok(commands.register_customer(cmd, &meta).await?)
    })
    .await
}

fn parse_register(json: &Value) -> Result<RegisterCustomer, ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let customer_id = v.optional::<Uuid>(o, "", "customer_id");
    let email = v.required::<Email>(o, "", "email");
    let name = v.required::<Text>(o, "", "name");
    let phone = v.optional::<Text>(o, "", "phone");
    v.finish(|| {
        Some(RegisterCustomer {
            customer_id: customer_id.unwrap_or_else(Uuid::now_v7),
            email: email?,
            name: name?,
            phone,
            registered_at: Utc::now(),
        })
    })
}

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
        let mut v = Validation::new();
        let text = match v.object(json, "") {
            Some(o) => v.required::<Text>(o, "", "text"),
            None => None,
        };
        let text = v.finish(|| text)?;
        let cmd = CustomerCommand::AddNote {
            note_id: Uuid::now_v7(),
            text,
            at: Utc::now(),
        };
        Ok(commands.customer(id, headers.if_match, cmd, &meta).await?)
    })
    .await
}

async fn show(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Readers>,
    PathId(id): PathId,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Customers, &q).await?;
    let customer = queries::customer(&app.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no customer has this id".into()))?;
    Ok(axum::Json(customer).into_response())
}

async fn list(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Readers>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Customers, &q).await?;
    let page = queries::customers(
        &app.pool,
        q.get("email").map(String::as_str),
        uuid_param(&q, "cursor")?,
        limit_param(&q)?,
    )
    .await?;
    Ok(page_json(page))
}

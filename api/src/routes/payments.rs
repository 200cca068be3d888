//! `/v1/payments`: create, authorize, capture, refund, void, fail; read one.

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use ordo_commands::service::NewPayment;
use ordo_domain::payment::PaymentCommand;
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency};
use ordo_projections::{queries, Projection};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
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
        .route("/v1/payments", post(create).get(list))
        .route("/v1/payments/{id}", get(show))
        .route("/v1/payments/{id}/authorize", post(authorize))
        .route("/v1/payments/{id}/capture", post(capture))
        .route("/v1/payments/{id}/refund", post(refund))
        .route("/v1/payments/{id}/void", post(void))
        .route("/v1/payments/{id}/fail", post(fail))
}

/// An amount that must be above zero.
struct Positive(Amount);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        Amount::positive(raw)
            .map(Positive)
            .map_err(D::Error::custom)
    }
}

async fn create(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/payments",
    };
    let (json, commands) = (&body.json, &app.commands);
    run_command(&app, &caller, &headers, &body, success, |meta| async move {
        let request = parse_create(json)?;
        Ok(commands.create_payment(request, &meta).await?)
    })
    .await
}

fn parse_create(json: &Value) -> Result<NewPayment, ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let payment_id = v.optional::<Uuid>(o, "", "payment_id");
    let order_id = v.required::<Uuid>(o, "", "order_id");
    let amount = v.required::<Positive>(o, "", "amount");
    let currency = v.required::<Currency>(o, "", "currency");
    let method = v.required::<Text>(o, "", "method");
    v.finish(|| {
        Some(NewPayment {
            payment_id: payment_id.unwrap_or_else(Uuid::now_v7),
            order_id: order_id?,
            amount: amount?.0,
            currency: currency?,
            method: method?,
            at: Utc::now(),
        })
    })
}

/// Run a lifecycle command on an existing payment.
async fn lifecycle(
    app: AppState,
    caller: auth::Caller,
    id: Uuid,
    headers: CommandHeaders,
    body: CommandBody,
    parse: impl FnOnce(&mut Validation, &serde_json::Map<String, Value>) -> Option<PaymentCommand>,
) -> Response {
    let (json, commands) = (&body.json, &app.commands);
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        Success::Ok,
        |meta| async move {
            let mut v = Validation::new();
            let cmd = match v.object(json, "") {
                Some(o) => parse(&mut v, o),
                None => None,
            };
            let cmd = v.finish(|| cmd)?;
            Ok(commands.payment(id, headers.if_match, cmd, &meta).await?)
        },
    )
    .await
}

macro_rules! payment_route {
    ($name:ident, |$v:ident, $o:ident| $parse:expr) => {
        async fn $name(
            State(app): State<AppState>,
            Allowed(caller, _): Allowed<auth::Commands>,
            PathId(id): PathId,
            headers: CommandHeaders,
            body: CommandBody,
        ) -> Response {
            lifecycle(app, caller, id, headers, body, |$v, $o| $parse).await
        }
    };
}

payment_route!(authorize, |v, o| {
    let provider_reference = v.required::<Text>(o, "", "provider_reference");
    let amount = v.optional::<Positive>(o, "", "amount");
    Some(PaymentCommand::Authorize {
        provider_reference: provider_reference?,
        amount: amount.map(|a| a.0),
        at: Utc::now(),
    })
});

payment_route!(capture, |v, o| {
    let amount = v.required::<Positive>(o, "", "amount");
    Some(PaymentCommand::Capture {
        amount: amount?.0,
        at: Utc::now(),
    })
});

payment_route!(refund, |v, o| {
    let amount = v.required::<Positive>(o, "", "amount");
    let reason = v.required::<Text>(o, "", "reason");
    Some(PaymentCommand::Refund {
        amount: amount?.0,
        reason: reason?,
        at: Utc::now(),
    })
});

payment_route!(void, |_v, _o| Some(PaymentCommand::Void { at: Utc::now() }));

payment_route!(fail, |v, o| {
    let reason = v.required::<Text>(o, "", "reason");
    Some(PaymentCommand::Fail {
        reason: reason?,
        at: Utc::now(),
    })
});

async fn show(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Readers>,
    PathId(id): PathId,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Payments, &q).await?;
    let payment = queries::payment(&app.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no payment has this id".into()))?;
    let version = payment["version"].as_u64().unwrap_or_default();
    Ok(super::versioned_json(version, payment))
}

async fn list(
    State(app): State<AppState>,
    Allowed(_, _): Allowed<auth::Readers>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Payments, &q).await?;
    let page = queries::payments(
        &app.pool,
        uuid_param(&q, "order_id")?,
        uuid_param(&q, "cursor")?,
        limit_param(&q)?,
    )
    .await?;
    Ok(page_json(page))
}

//! `/v1/payments`: create, authorize, capture, refund, void, fail; read one.

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::Utc;
use ordo_commands::service::NewPayment;
use ordo_domain::payment::PaymentCommand;
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency};
use ordo_projections::views::{Page, PaymentView};
use ordo_projections::{queries, Projection};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{limit_param, page_json, uuid_param, wait_for_position, Params};
use crate::auth::{self, Allowed};
use crate::extract::{CommandBody, CommandHeaders, PathId};
use crate::openapi::schemas as body;
use crate::openapi::{params, Applied, CommandHeaderParams, CommandProblems, Created};
use crate::openapi::{CreateProblems, ReadOneProblems, RestrictedReadProblems};
use crate::respond::{run_command, Success};
use crate::validate::Validation;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(authorize))
        .routes(routes!(capture))
        .routes(routes!(refund))
        .routes(routes!(void))
        .routes(routes!(fail))
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

/// Create a pending payment for an order, in the order's currency (storefront, admin).
#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = body::CreatePayment,
    params(CommandHeaderParams), responses(Created, CreateProblems))]
async fn create(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/payments",
    };
    let (json, commands, scope) = (&body.json, &app.commands, (&app, &caller));
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        success,
        |mut meta| async move {
            let request = parse_create(json)?;
            meta.channel = Some(super::channels::creation_channel(scope.0, scope.1, json).await?);
            Ok(commands.create_payment(request, &meta).await?)
        },
    )
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
    ($(#[$doc:meta])* $name:ident, $path:literal, $body:ty, |$v:ident, $o:ident| $parse:expr) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "payments", request_body = $body,
            params(("id" = Uuid, Path, description = "The payment's id"), CommandHeaderParams),
            responses(Applied, CommandProblems))]
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

payment_route!(
    /// Authorize a pending payment, for its amount unless `amount` says less (storefront, admin).
    authorize, "/v1/payments/{id}/authorize", body::AuthorizePayment, |v, o| {
    let provider_reference = v.required::<Text>(o, "", "provider_reference");
    let amount = v.optional::<Positive>(o, "", "amount");
    Some(PaymentCommand::Authorize {
        provider_reference: provider_reference?,
        amount: amount.map(|a| a.0),
        at: Utc::now(),
    })
});

payment_route!(
    /// Capture (part of) what is authorized (storefront, admin).
    capture, "/v1/payments/{id}/capture", body::CapturePayment, |v, o| {
    let amount = v.required::<Positive>(o, "", "amount");
    Some(PaymentCommand::Capture {
        amount: amount?.0,
        at: Utc::now(),
    })
});

payment_route!(
    /// Refund (part of) what is captured (storefront, admin).
    refund, "/v1/payments/{id}/refund", body::RefundPayment, |v, o| {
    let amount = v.required::<Positive>(o, "", "amount");
    let reason = v.required::<Text>(o, "", "reason");
    Some(PaymentCommand::Refund {
        amount: amount?.0,
        reason: reason?,
        at: Utc::now(),
    })
});

payment_route!(
    /// Void an authorized payment while nothing is captured (storefront, admin).
    void, "/v1/payments/{id}/void", body::Empty, |_v, _o| Some(PaymentCommand::Void { at: Utc::now() }));

payment_route!(
    /// Record that a pending payment failed (storefront, admin).
    fail, "/v1/payments/{id}/fail", body::FailPayment, |v, o| {
    let reason = v.required::<Text>(o, "", "reason");
    Some(PaymentCommand::Fail {
        reason: reason?,
        at: Utc::now(),
    })
});

/// One payment from the payments read model (every role).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "The payment's id"), params::ReadOne),
    responses((status = 200, description = "The payment", body = PaymentView,
        headers(("ETag" = String, description = "`\"<version>\"` of the payment"))), ReadOneProblems))]
async fn show(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    PathId(id): PathId,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Payments, &q).await?;
    let payment = queries::payment(&app.pool, caller.scope(), id)
        .await
        .map_err(super::read_error)?
        .ok_or_else(|| ApiError::NotFound("no payment has this id".into()))?;
    let version = u64::try_from(payment.version).unwrap_or_default();
    Ok(super::versioned_json(version, payment))
}

/// Payments, oldest id first, cursor-paginated (every role).
#[utoipa::path(get, path = "/v1/payments", tag = "payments", params(params::PaymentList),
    responses((status = 200, description = "A page of payments", body = Page<PaymentView>), RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&caller, &q)?;
    wait_for_position(&app, Projection::Payments, &q).await?;
    let page = queries::payments(
        &app.pool,
        channel.as_deref(),
        uuid_param(&q, "order_id")?,
        uuid_param(&q, "cursor")?,
        limit_param(&q)?,
    )
    .await
    .map_err(super::read_error)?;
    Ok(page_json(page))
}

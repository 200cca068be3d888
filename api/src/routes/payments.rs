//! `/v1/payments`: create, authorize, capture, refund, void, fail; read one.

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use ordo_commands::channels::ChannelId;
use ordo_commands::service::NewPayment;
use ordo_domain::payment::PaymentCommand;
use ordo_domain::values::Text;
use ordo_domain::{Amount, Currency};
use ordo_projections::views::{Page, PaymentView};
use ordo_projections::{queries, Projection};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{limit_param, page_json, uuid_param, wait_for_position};
use crate::auth::{self, Allowed};
use crate::extract::{CommandBody, CommandHeaders, CreationHeaders, PathId, QueryParams};
use crate::openapi::RestrictedReadProblems;
use crate::openapi::{params, Applied, CommandProblems, Created};
use crate::openapi::{CreateProblems, PaymentsCapped, ReadOneProblems};
use crate::respond::{run_command, Success};
use crate::validate::{request_body, Empty, Scalar};
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

/// An amount that must be above zero: what a payment, its authorization, a capture and a
/// refund move.
pub struct PositiveAmount(Amount);

impl<'de> Deserialize<'de> for PositiveAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        Amount::positive(raw)
            .map(PositiveAmount)
            .map_err(D::Error::custom)
    }
}

impl Scalar for PositiveAmount {}

impl PartialSchema for PositiveAmount {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some(
                "An amount in the currency's minor unit (cents for EUR), above zero and at \
                 most 10^15; written without a decimal point (`2999`, not `2999.0`).",
            ))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(Amount::MAX.get() as f64))
            .examples([2999]);
        RefOr::T(Schema::Object(schema.build()))
    }
}

impl ToSchema for PositiveAmount {}

request_body! {
    pub struct CreatePayment {
        /// Generated when absent.
        pub payment_id: Option<Uuid>,
        pub order_id: Uuid,
        pub amount: PositiveAmount,
        pub currency: Currency,
        #[schema(example = "card")]
        pub method: Text,
        /// The sales channel to create it in: only a global key may name one (default
        /// `default`); a key scoped to a channel creates in its own (naming another is 403).
        pub channel: Option<ChannelId>,
    }
}

request_body! {
    pub struct AuthorizePayment {
        pub provider_reference: Text,
        /// Defaults to the payment's amount.
        pub amount: Option<PositiveAmount>,
    }
}

request_body! {
    pub struct CapturePayment {
        pub amount: PositiveAmount,
    }
}

request_body! {
    pub struct RefundPayment {
        pub amount: PositiveAmount,
        pub reason: Text,
    }
}

request_body! {
    pub struct FailPayment {
        pub reason: Text,
    }
}

/// Create a pending payment for an order, in the order's currency (storefront, admin).
#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    params(CreationHeaders), responses(Created, CreateProblems, PaymentsCapped))]
async fn create(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    CreationHeaders(headers): CreationHeaders,
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
            let request = CreatePayment::read(json)?;
            meta.channel =
                Some(super::channels::creation_channel(scope.0, scope.1, request.channel).await?);
            let payment = NewPayment {
                payment_id: request.payment_id.unwrap_or_else(Uuid::now_v7),
                order_id: request.order_id,
                amount: request.amount.0,
                currency: request.currency,
                method: request.method,
                at: Utc::now(),
            };
            Ok(commands.create_payment(payment, &meta).await?)
        },
    )
    .await
}

/// Run a lifecycle command, read from its body by `parse`, on an existing payment.
async fn lifecycle(
    app: AppState,
    caller: auth::Caller,
    id: Uuid,
    headers: CommandHeaders,
    body: CommandBody,
    parse: impl FnOnce(&serde_json::Value) -> Result<PaymentCommand, ApiError>,
) -> Response {
    let (json, commands) = (&body.json, &app.commands);
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        Success::Ok,
        |meta| async move {
            let cmd = parse(json)?;
            Ok(commands.payment(id, headers.if_match, cmd, &meta).await?)
        },
    )
    .await
}

macro_rules! payment_route {
    ($(#[$doc:meta])* $name:ident, $path:literal, $body:ident, |$b:ident| $command:expr) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "payments", request_body = $body,
            params(("id" = Uuid, Path, description = "The payment's id"), CommandHeaders),
            responses(Applied, CommandProblems))]
        async fn $name(
            State(app): State<AppState>,
            Allowed(caller, _): Allowed<auth::Commands>,
            PathId(id): PathId,
            headers: CommandHeaders,
            body: CommandBody,
        ) -> Response {
            lifecycle(app, caller, id, headers, body, |json| {
                let $b = $body::read(json)?;
                Ok($command)
            })
            .await
        }
    };
}

payment_route!(
/// Authorize a pending payment, for its amount unless `amount` says less (storefront, admin).
authorize, "/v1/payments/{id}/authorize", AuthorizePayment, |b| PaymentCommand::Authorize {
    provider_reference: b.provider_reference,
    amount: b.amount.map(|a| a.0),
    at: Utc::now(),
});

payment_route!(
/// Capture (part of) what is authorized (storefront, admin).
capture, "/v1/payments/{id}/capture", CapturePayment, |b| PaymentCommand::Capture {
    amount: b.amount.0,
    at: Utc::now(),
});

payment_route!(
/// Refund (part of) what is captured (storefront, admin).
refund, "/v1/payments/{id}/refund", RefundPayment, |b| PaymentCommand::Refund {
    amount: b.amount.0,
    reason: b.reason,
    at: Utc::now(),
});

payment_route!(
    /// Void an authorized payment while nothing is captured (storefront, admin).
    void, "/v1/payments/{id}/void", Empty, |_b| PaymentCommand::Void { at: Utc::now() });

payment_route!(
/// Record that a pending payment failed (storefront, admin).
fail, "/v1/payments/{id}/fail", FailPayment, |b| PaymentCommand::Fail {
    reason: b.reason,
    at: Utc::now(),
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
    QueryParams(q): QueryParams,
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
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
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

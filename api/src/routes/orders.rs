//! `/v1/orders`: place, confirm, cancel, ship, deliver; read one.

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use ordo_commands::channels::ChannelId;
use ordo_commands::service::ShipRequest;
use ordo_domain::order::{self, NewLine, OrderCommand, ShipmentLine};
use ordo_domain::values::{Address, Text};
use ordo_domain::Currency;
use ordo_projections::views::{OrderStatus, OrderView, Page};
use ordo_projections::{queries, Projection};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{limit_param, page_json, uuid_param, wait_for_position};
use crate::auth::{self, Allowed};
use crate::extract::{CommandBody, CommandHeaders, CreationHeaders, PathId, QueryParams};
use crate::openapi::{params, Applied, CommandProblems, Created};
use crate::openapi::{CreateProblems, ReadOneProblems, RestrictedReadProblems};
use crate::respond::{run_command, Success};
use crate::validate::{request_body, Empty, Field, Validation};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place, list))
        .routes(routes!(show))
        .routes(routes!(confirm))
        .routes(routes!(cancel))
        .routes(routes!(ship))
        .routes(routes!(deliver))
}

request_body! {
    pub struct PlaceOrder {
        /// Generated when absent.
        pub order_id: Option<Uuid>,
        pub customer_id: Uuid,
        pub currency: Currency,
        #[schema(min_items = 1, max_items = 200)]
        pub lines: Vec<NewLine>,
        pub shipping_address: Option<Address>,
        /// The sales channel to create it in: only a global key may name one (default
        /// `default`); a key scoped to a channel creates in its own (naming another is 403).
        pub channel: Option<ChannelId>,
    }
}

request_body! {
    pub struct CancelOrder {
        pub reason: Text,
    }
}

request_body! {
    pub struct ShipOrder {
        pub carrier: Text,
        pub tracking_number: Text,
        /// What this shipment holds; everything not yet shipped when absent.
        #[schema(min_items = 1)]
        pub lines: Option<Vec<ShipmentLine>>,
    }
}

/// An order's lines, each field read on its own (`lines[2].sku`).
impl Field for Vec<NewLine> {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        v.array(o, path, key, |v, item, path| {
            let line = v.object(item, path)?;
            v.known(line, path, &["sku", "name", "quantity", "unit_price"]);
            let sku = Field::read(v, line, path, "sku");
            let name = Field::read(v, line, path, "name");
            let quantity = Field::read(v, line, path, "quantity");
            let unit_price = Field::read(v, line, path, "unit_price");
            Some(NewLine {
                sku: sku?,
                name: name?,
                quantity: quantity?,
                unit_price: unit_price?,
            })
        })
    }
}

/// A shipment's lines, absent or null for everything not yet shipped.
impl Field for Option<Vec<ShipmentLine>> {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        if o.get(key).is_none_or(Value::is_null) {
            return Some(None);
        }
        let lines = v.array(o, path, key, |v, item, path| {
            let line = v.object(item, path)?;
            v.known(line, path, &["sku", "quantity"]);
            let sku = Field::read(v, line, path, "sku");
            let quantity = Field::read(v, line, path, "quantity");
            Some(ShipmentLine {
                sku: sku?,
                quantity: quantity?,
            })
        });
        lines.map(Some)
    }
}

/// `Address`'s fields, as its schema names them (`openapi::tests` keeps the two equal).
pub(crate) const ADDRESS_FIELDS: [&str; 5] = ["line1", "line2", "city", "postal_code", "country"];

/// A shipping address, absent or null for none; a field it does not have is refused, as
/// everywhere in a body (the event's `Address` itself reads any stored JSON as before).
impl Field for Option<Address> {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        if let Some(address) = o.get(key).and_then(Value::as_object) {
            v.known(address, &crate::validate::join(path, key), &ADDRESS_FIELDS);
        }
        Some(v.optional(o, path, key))
    }
}

/// Place an order (storefront, admin). `order_id` is generated when absent; totals are
/// computed by the server.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    params(CreationHeaders), responses(Created, CreateProblems))]
async fn place(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    CreationHeaders(headers): CreationHeaders,
    body: CommandBody,
) -> Response {
    let success = Success::Created {
        collection: "/v1/orders",
    };
    let (json, commands, scope) = (&body.json, &app.commands, (&app, &caller));
    run_command(
        &app,
        &caller,
        &headers,
        &body,
        success,
        |mut meta| async move {
            let request = PlaceOrder::read(json)?;
            meta.channel =
                Some(super::channels::creation_channel(scope.0, scope.1, request.channel).await?);
            let cmd = order::PlaceOrder {
                order_id: request.order_id.unwrap_or_else(Uuid::now_v7),
                customer_id: request.customer_id,
                currency: request.currency,
                lines: request.lines,
                shipping_address: request.shipping_address,
                placed_at: Utc::now(),
            };
            Ok(commands.place_order(cmd, &meta).await?)
        },
    )
    .await
}

/// Run a lifecycle command on an existing order.
async fn lifecycle(
    app: AppState,
    caller: auth::Caller,
    id: Uuid,
    headers: CommandHeaders,
    body: CommandBody,
    parse: impl FnOnce(&Value) -> Result<OrderCommand, ApiError>,
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
            Ok(commands.order(id, headers.if_match, cmd, &meta).await?)
        },
    )
    .await
}

/// Confirm a placed order (storefront, admin).
#[utoipa::path(post, path = "/v1/orders/{id}/confirm", tag = "orders", request_body = Empty,
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders), responses(Applied, CommandProblems))]
async fn confirm(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    lifecycle(app, caller, id, headers, body, |json| {
        Empty::read(json)?;
        Ok(OrderCommand::Confirm { at: Utc::now() })
    })
    .await
}

/// Cancel an order while nothing has shipped (storefront, support, admin).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", request_body = CancelOrder,
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders), responses(Applied, CommandProblems))]
async fn cancel(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Cancel>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    lifecycle(app, caller, id, headers, body, |json| {
        Ok(OrderCommand::Cancel {
            reason: CancelOrder::read(json)?.reason,
            at: Utc::now(),
        })
    })
    .await
}

/// Mark a shipped order delivered (storefront, admin).
#[utoipa::path(post, path = "/v1/orders/{id}/deliver", tag = "orders", request_body = Empty,
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders), responses(Applied, CommandProblems))]
async fn deliver(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
    PathId(id): PathId,
    headers: CommandHeaders,
    body: CommandBody,
) -> Response {
    lifecycle(app, caller, id, headers, body, |json| {
        Empty::read(json)?;
        Ok(OrderCommand::Deliver { at: Utc::now() })
    })
    .await
}

/// Ship a confirmed, paid order, in full or in part (storefront, admin).
#[utoipa::path(post, path = "/v1/orders/{id}/ship", tag = "orders", request_body = ShipOrder,
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders), responses(Applied, CommandProblems))]
async fn ship(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Commands>,
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
            let request = ShipOrder::read(json)?;
            let request = ShipRequest {
                carrier: request.carrier,
                tracking_number: request.tracking_number,
                lines: request.lines,
                at: Utc::now(),
            };
            Ok(commands
                .ship_order(id, headers.if_match, request, &meta)
                .await?)
        },
    )
    .await
}

/// One order from the orders read model (every role).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path, description = "The order's id"), params::ReadOne),
    responses((status = 200, description = "The order", body = OrderView,
        headers(("ETag" = String, description = "`\"<version>\"` of the order"))), ReadOneProblems))]
async fn show(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    PathId(id): PathId,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    wait_for_position(&app, Projection::Orders, &q).await?;
    let order = queries::order(&app.pool, caller.scope(), id)
        .await
        .map_err(super::read_error)?
        .ok_or_else(|| ApiError::NotFound("no order has this id".into()))?;
    let version = u64::try_from(order.version).unwrap_or_default();
    Ok(super::versioned_json(version, order))
}

/// Orders, oldest id first, cursor-paginated (every role).
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(params::OrderList),
    responses((status = 200, description = "A page of orders", body = Page<OrderView>), RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Readers>,
    QueryParams(q): QueryParams,
) -> Result<Response, ApiError> {
    let channel = super::channels::read_scope(&app, &caller, &q).await?;
    wait_for_position(&app, Projection::Orders, &q).await?;
    let status = q
        .get("status")
        .map(|s| {
            OrderStatus::parse(s).ok_or_else(|| ApiError::BadQuery {
                param: "status",
                detail: "must be one of placed, confirmed, shipped, delivered, cancelled".into(),
            })
        })
        .transpose()?;
    let page = queries::orders(
        &app.pool,
        channel.as_deref(),
        uuid_param(&q, "customer_id")?,
        status,
        uuid_param(&q, "cursor")?,
        limit_param(&q)?,
    )
    .await
    .map_err(super::read_error)?;
    Ok(page_json(page))
}

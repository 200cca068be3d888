//! The endpoint lifecycle: list, show, update, delete, disable, enable, rotate the secret.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_workers::integration::endpoints::{self, EndpointList, EndpointUpdate, EndpointView};
use serde_json::Value;

use super::{check_egress, description_field, event_types_field, url_field};
use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::openapi::{admin, AdminBodyProblems, RestrictedReadOneProblems, RestrictedReadProblems};
use crate::validate::Validation;
use crate::{ApiError, AppState};

pub(super) fn not_found() -> ApiError {
    ApiError::NotFound("no webhook endpoint has this id".into())
}

/// Every endpoint with its state and queue, oldest first (admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Endpoints", body = EndpointList), RestrictedReadProblems))]
pub(super) async fn list(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
) -> Result<Response, ApiError> {
    Ok(Json(endpoints::list(&app.pool).await?).into_response())
}

/// One endpoint: its settings, its state (`active`, `failing`, `disabled`, and why) and its
/// queue (pending deliveries, the oldest one's age, delivered and failed counts) (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        RestrictedReadOneProblems))]
pub(super) async fn show(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let endpoint = endpoints::show(&app.pool, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(endpoint).into_response())
}

fn parse_update(json: &Value) -> Result<EndpointUpdate, ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let url = v.optional::<String>(o, "", "url");
    let url = url_field(&mut v, url);
    let event_types = o
        .contains_key("event_types")
        .then(|| event_types_field(&mut v, o))
        .flatten();
    let description = match o.get("description") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => Some(description_field(&mut v, o)),
    };
    let channel = o
        .contains_key("channel")
        .then(|| super::super::channels::optional_channel(&mut v, o))
        .flatten();
    v.finish(|| {
        Some(EndpointUpdate {
            url,
            event_types,
            description,
            channel: channel.map(|c| c.map(|c| c.as_str().to_owned())),
        })
    })
}

/// Change an endpoint's `url`, `event_types`, `description` (null clears it) or `channel`
/// (null: every channel's events); fields left out stay as they are (global admin).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    request_body = admin::UpdateWebhook,
    responses((status = 200, description = "The endpoint", body = EndpointView), AdminBodyProblems))]
pub(super) async fn update(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let change = parse_update(&body.json)?;
    if let Some(Some(channel)) = &change.channel {
        let id = ordo_commands::channels::ChannelId::parse(channel)
            .map_err(|detail| ApiError::field("channel", detail))?;
        super::super::channels::known(&app, &id).await?;
    }
    if let Some(url) = &change.url {
        check_egress(&app, url).await?;
    }
    let endpoint = endpoints::update(&app.pool, id, &change)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(endpoint).into_response())
}

/// Delete an endpoint and its waiting deliveries; its attempts stay recorded (admin).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"), RestrictedReadOneProblems))]
pub(super) async fn delete(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    if endpoints::delete(&app.pool, id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found())
    }
}

/// Disable an endpoint: no deliveries are written for it and its waiting ones wait (admin).
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        RestrictedReadOneProblems))]
pub(super) async fn disable(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    set_enabled(&app, id, false).await
}

/// Enable an endpoint (also one disabled automatically): its waiting deliveries go on
/// (admin).
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
        RestrictedReadOneProblems))]
pub(super) async fn enable(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    set_enabled(&app, id, true).await
}

async fn set_enabled(app: &AppState, id: uuid::Uuid, enabled: bool) -> Result<Response, ApiError> {
    let endpoint = endpoints::set_enabled(&app.pool, id, enabled)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(endpoint).into_response())
}

/// A new signing secret, shown once. For a day, deliveries carry the signatures of both
/// the new and the previous secret (admin).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The new secret", body = super::Secret),
        RestrictedReadOneProblems))]
pub(super) async fn rotate_secret(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let secret = endpoints::rotate_secret(&app.pool, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(super::Secret { id, secret }).into_response())
}

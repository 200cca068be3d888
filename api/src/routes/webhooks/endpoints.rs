//! The endpoint lifecycle: list, show, update, delete, disable, enable, rotate the secret.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_workers::integration::endpoints::{self, EndpointList, EndpointUpdate, EndpointView};

use ordo_commands::channels::ChannelId;

use super::{check_egress, Description, EventTypePattern, EventTypes, WebhookUrl};
use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::openapi::{AdminBodyProblems, RestrictedReadOneProblems, RestrictedReadProblems};
use crate::validate::request_body;
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

request_body! {
    /// `PATCH /v1/webhooks/{id}`: fields left out stay as they are.
    pub struct UpdateWebhook {
        #[schema(value_type = Option<String>, example = "https://shop.example.com/hooks/ordo",
            max_length = 2048)]
        pub url: Option<WebhookUrl>,
        #[schema(value_type = Option<Vec<EventTypePattern>>, min_items = 1)]
        pub event_types: Option<EventTypes>,
        /// Null clears it; at most 500 characters.
        #[schema(value_type = Option<String>, max_length = 500)]
        pub description: Option<Option<Description>>,
        /// Subscribe it to the events of this sales channel only; null: of every channel.
        /// Applies to events recorded from then on.
        #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub channel: Option<Option<ChannelId>>,
    }
}

impl From<UpdateWebhook> for EndpointUpdate {
    fn from(update: UpdateWebhook) -> Self {
        Self {
            url: update.url.map(|url| url.0),
            event_types: update.event_types.map(|types| types.0),
            description: update.description.map(|d| d.map(|d| d.0)),
            channel: update.channel.map(|c| c.map(|c| c.as_str().to_owned())),
        }
    }
}

/// Change an endpoint's `url`, `event_types`, `description` (null clears it) or `channel`
/// (null: every channel's events); fields left out stay as they are (global admin).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    request_body = UpdateWebhook,
    responses((status = 200, description = "The endpoint", body = EndpointView), AdminBodyProblems))]
pub(super) async fn update(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    PathId(id): PathId,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let change = EndpointUpdate::from(UpdateWebhook::read(&body.json)?);
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

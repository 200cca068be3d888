//! `/v1/keys` (admin): list keys, create one (shown once), revoke one. A revoked key stops
//! working in every process within a second (see [`crate::keys`]).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::channels::Name;
use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::keys::{self, CreatedKey, KeyInfo};
use crate::openapi::{AdminBodyProblems, RestrictedReadOneProblems, RestrictedReadProblems};
use crate::validate::{request_body, Scalar};
use crate::{ApiError, AppState, Role};
use ordo_commands::channels::ChannelId;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// Every API key, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyInfo>,
}

impl Scalar for Role {}

request_body! {
    /// `POST /v1/keys`.
    pub struct CreateKey {
        /// `storefront`, `support`, `analyst` or `admin`.
        #[schema(value_type = String, pattern = "^(storefront|support|analyst|admin)$")]
        pub role: Role,
        /// Who holds it, for the audit trail (1 to 200 characters).
        #[schema(value_type = String, min_length = 1, max_length = 200)]
        pub name: Name,
        /// The channel the key is scoped to. Storefront keys always belong to one (default
        /// `default`); other roles' keys are global unless one is named.
        #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub channel: Option<ChannelId>,
    }
}

/// Every key: id, name, role, channel, when created and revoked; never the key (global
/// admin).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "Every key", body = KeyList), RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
) -> Result<Response, ApiError> {
    let items = keys::list(&app.pool).await?;
    Ok(Json(KeyList { items }).into_response())
}

/// Create a key (global admin). 201 with the key, shown this once: only its hash is stored.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "Created; `key` is shown only now", body = CreatedKey),
        AdminBodyProblems))]
async fn create(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let request = CreateKey::read(&body.json)?;
    if let Some(channel) = &request.channel {
        super::channels::known(&app, channel).await?;
    }
    let channel = request.channel.as_ref().map(ChannelId::as_str);
    let created: CreatedKey =
        keys::create(&app.pool, request.role, request.name.as_str(), channel).await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revoke a key (global admin): every process refuses it within a second. Revoking a revoked key
/// answers the same, with its first revocation time.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked", body = KeyInfo), RestrictedReadOneProblems))]
async fn revoke(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let revoked = keys::revoke(&app.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no key has this id".into()))?;
    // This process refuses it from the next request on, without waiting for its own
    // notification to come back (the other processes hear that one).
    app.keys.forget(id);
    Ok(Json(revoked).into_response())
}

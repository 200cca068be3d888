//! `/v1/keys` (admin): list keys, create one (shown once), revoke one. A revoked key stops
//! working in every process within a second (see [`crate::keys`]).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Global};
use crate::extract::{CommandBody, PathId};
use crate::keys::{self, CreatedKey, KeyInfo};
use crate::openapi::{AdminBodyProblems, RestrictedReadOneProblems, RestrictedReadProblems};
use crate::validate::Validation;
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

/// `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the request's shape, for the OpenAPI document; parsed by `parse_create`
pub struct CreateKey {
    /// `storefront`, `support`, `analyst` or `admin`.
    #[schema(pattern = "^(storefront|support|analyst|admin)$")]
    pub role: String,
    /// Who holds it, for the audit trail (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The channel the key is scoped to. Storefront keys always belong to one (default
    /// `default`); other roles' keys are global unless one is named.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub channel: Option<String>,
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

fn parse_create(json: &serde_json::Value) -> Result<(Role, String, Option<ChannelId>), ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let role = v
        .required::<String>(o, "", "role")
        .and_then(|role| match role.parse::<Role>() {
            Ok(role) => Some(role),
            Err(message) => {
                v.error("role", message);
                None
            }
        });
    let name = v
        .required::<ordo_domain::values::Text>(o, "", "name")
        .and_then(|name| {
            if name.as_str().chars().count() > 200 {
                v.error("name", "must be at most 200 characters");
                None
            } else {
                Some(name.as_str().to_owned())
            }
        });
    let channel = super::channels::optional_channel(&mut v, o);
    v.finish(|| Some((role?, name?, channel?)))
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
    let (role, name, channel) = parse_create(&body.json)?;
    if let Some(channel) = &channel {
        super::channels::known(&app, channel).await?;
    }
    let channel = channel.as_ref().map(ChannelId::as_str);
    let created: CreatedKey = keys::create(&app.pool, role, &name, channel).await?;
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

//! `/v1/channels` (admin): sales channels — create, list, show, update — and the channel
//! rules every other route applies: which channel a request acts in and which it may see.
//!
//! A key scoped to a channel acts in it and sees only it: another channel's resource is
//! "not found" (404, never 403: the key must not learn that it exists), and naming another
//! channel in a body or a `?channel=` is 403 `channel-forbidden` whether that channel exists
//! or not. A global key acts in the channel its body names (`default` when none) and sees
//! every channel, or the one its `?channel=` names.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ordo_commands::channels::{self, Channel, ChannelId, ChannelUpdate};
use ordo_domain::values::Text;
use ordo_domain::DomainError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Params;
use crate::auth::{self, Allowed, Caller, Global};
use crate::extract::CommandBody;
use crate::openapi::{
    AdminBodyProblems, AdminCreateProblems, RestrictedReadOneProblems, RestrictedReadProblems,
};
use crate::validate::{request_body, Field, Scalar, Validation};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update))
}

// ------------------------------------------------------------------ the rules

/// An optional `channel` field: `Some(None)` when absent, `None` when invalid (recorded).
pub(crate) fn optional_channel(
    v: &mut Validation,
    o: &Map<String, Value>,
) -> Option<Option<ChannelId>> {
    match o.get("channel") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(raw)) => match ChannelId::parse(raw) {
            Ok(id) => Some(Some(id)),
            Err(message) => {
                v.error("channel", message);
                None
            }
        },
        Some(_) => {
            v.error("channel", "must be a string");
            None
        }
    }
}

/// A request body's `channel`, always a top-level field (see
/// [`request_body!`](crate::validate::request_body)).
impl Field for Option<ChannelId> {
    fn read(v: &mut Validation, o: &Map<String, Value>, _: &str, _: &str) -> Option<Self> {
        optional_channel(v, o)
    }
}

/// An update's `channel`: left out (`None`), null (`Some(None)`: every channel) or one.
impl Field for Option<Option<ChannelId>> {
    fn read(v: &mut Validation, o: &Map<String, Value>, _: &str, key: &str) -> Option<Self> {
        Some(
            o.contains_key(key)
                .then(|| optional_channel(v, o))
                .flatten(),
        )
    }
}

/// 422 on `channel` unless channel `id` exists.
pub(crate) async fn known(app: &AppState, id: &ChannelId) -> Result<(), ApiError> {
    if channels::exists(&app.pool, id.as_str()).await? {
        Ok(())
    } else {
        Err(ApiError::field("channel", "no channel has this id"))
    }
}

/// The channel a command that creates a stream records it in: a scoped key's own (naming
/// another is 403), or the one a global key's body names (`named`; `default` when none; it
/// must exist: 422 otherwise).
pub(crate) async fn creation_channel(
    app: &AppState,
    caller: &Caller,
    named: Option<ChannelId>,
) -> Result<String, ApiError> {
    match (caller.scope(), named) {
        (Some(scope), Some(named)) if named.as_str() != scope => Err(ApiError::ChannelScoped),
        (Some(scope), _) => Ok(scope.to_owned()),
        (None, Some(named)) => {
            known(app, &named).await?;
            Ok(named.as_str().to_owned())
        }
        (None, None) => Ok(channels::DEFAULT.to_owned()),
    }
}

/// The channel a read is confined to: a scoped key's own (a `?channel=` naming another is
/// 403), or the one a global key's `?channel=` names (`None`: every channel), which must
/// exist: a misspelt channel is a 400, not an empty list that looks like no sales.
pub(crate) async fn read_scope(
    app: &AppState,
    caller: &Caller,
    q: &Params,
) -> Result<Option<String>, ApiError> {
    let named = super::text_param(q, "channel")?
        .map(|raw| {
            ChannelId::parse(raw).map_err(|detail| ApiError::BadQuery {
                param: "channel",
                detail,
            })
        })
        .transpose()?;
    match (caller.scope(), named) {
        (Some(scope), Some(named)) if named.as_str() != scope => Err(ApiError::ChannelScoped),
        (Some(scope), _) => Ok(Some(scope.to_owned())),
        (None, Some(named)) => {
            if !channels::exists(&app.pool, named.as_str()).await? {
                return Err(ApiError::BadQuery {
                    param: "channel",
                    detail: format!("no channel is called `{}`", named.as_str()),
                });
            }
            Ok(Some(named.as_str().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// 404 (as if it did not exist) unless `caller` sees `channel`.
pub(crate) fn visible(caller: &Caller, channel: &str, what: &str) -> Result<(), ApiError> {
    if caller.sees(channel) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no {what} has this id")))
    }
}

// ------------------------------------------------------------------ the routes

/// A sales channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    /// A lowercase slug (`a-z`, `0-9`, `-`; at most 63 characters).
    pub id: String,
    pub name: String,
    /// The sender of this channel's e-mail; `null`: the server's configured sender.
    pub email_from_address: Option<String>,
    pub email_from_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Channel> for ChannelView {
    fn from(c: Channel) -> Self {
        Self {
            id: c.id,
            name: c.name,
            email_from_address: c.email_from_address,
            email_from_name: c.email_from_name,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Channels, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<ChannelView>,
}

/// A channel id as a body's required field (`id` of a creation).
impl Field for ChannelId {
    fn read(v: &mut Validation, o: &Map<String, Value>, path: &str, key: &str) -> Option<Self> {
        let raw: String = v.required(o, path, key)?;
        ChannelId::parse(&raw)
            .map_err(|message| v.error(key, message))
            .ok()
    }
}

/// A name an admin gives (a channel's, a key's): text of 1 to [`channels::MAX_NAME_LEN`]
/// characters.
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Text::deserialize(d)?;
        if name.as_str().chars().count() > channels::MAX_NAME_LEN {
            return Err(serde::de::Error::custom(format!(
                "must be at most {} characters",
                channels::MAX_NAME_LEN
            )));
        }
        Ok(Self(name.as_str().to_owned()))
    }
}

impl Scalar for Name {}

/// The sender address of a channel's e-mail.
pub struct SenderAddress(String);

impl<'de> Deserialize<'de> for SenderAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = sender(d)?;
        if channels::valid_sender_address(&raw) {
            Ok(Self(raw))
        } else {
            Err(serde::de::Error::custom("must be an e-mail address"))
        }
    }
}

impl Scalar for SenderAddress {}

/// The sender name of a channel's e-mail: 1 to 200 characters, no control characters.
pub struct SenderName(String);

impl<'de> Deserialize<'de> for SenderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = sender(d)?;
        if !raw.is_empty() && raw.chars().count() <= 200 && !raw.chars().any(char::is_control) {
            Ok(Self(raw))
        } else {
            Err(serde::de::Error::custom(
                "must be 1 to 200 characters, without control characters",
            ))
        }
    }
}

impl Scalar for SenderName {}

/// A sender field's string, trimmed (`null` never gets here: it clears the field).
fn sender<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(raw) => Ok(raw.trim().to_owned()),
        _ => Err(serde::de::Error::custom("must be a string or null")),
    }
}

request_body! {
    /// `POST /v1/channels`.
    pub struct CreateChannel {
        /// A lowercase slug: `a-z`, `0-9` and `-`, starting with a letter or digit.
        #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub id: ChannelId,
        /// 1 to 200 characters.
        #[schema(value_type = String, min_length = 1, max_length = 200)]
        pub name: Name,
        /// The sender address of this channel's e-mail (default: the server's).
        #[schema(value_type = Option<String>)]
        pub email_from_address: Option<SenderAddress>,
        /// The sender name of this channel's e-mail.
        #[schema(value_type = Option<String>)]
        pub email_from_name: Option<SenderName>,
    }
}

request_body! {
    /// `PATCH /v1/channels/{id}`: the fields to change; `null` e-mail fields fall back to the
    /// server's sender.
    pub struct UpdateChannel {
        #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
        pub name: Option<Name>,
        #[schema(value_type = Option<String>)]
        pub email_from_address: Option<Option<SenderAddress>>,
        #[schema(value_type = Option<String>)]
        pub email_from_name: Option<Option<SenderName>>,
    }
}

impl From<UpdateChannel> for ChannelUpdate {
    fn from(body: UpdateChannel) -> Self {
        Self {
            name: body.name.map(|n| n.0),
            email_from_address: body.email_from_address.map(|a| a.map(|a| a.0)),
            email_from_name: body.email_from_name.map(|n| n.map(|n| n.0)),
        }
    }
}

/// Every channel (admin); a scoped admin sees its own only.
#[utoipa::path(get, path = "/v1/channels", tag = "channels",
    responses((status = 200, description = "Channels, by id", body = ChannelList), RestrictedReadProblems))]
async fn list(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Admins>,
) -> Result<Response, ApiError> {
    let items = channels::list(&app.pool)
        .await?
        .into_iter()
        .filter(|c| caller.sees(&c.id))
        .map(ChannelView::from)
        .collect();
    Ok(Json(ChannelList { items }).into_response())
}

/// One channel (admin); another channel than a scoped admin's own is 404.
#[utoipa::path(get, path = "/v1/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "The channel's id")),
    responses((status = 200, description = "The channel", body = ChannelView), RestrictedReadOneProblems))]
async fn show(
    State(app): State<AppState>,
    Allowed(caller, _): Allowed<auth::Admins>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    visible(&caller, &id, "channel")?;
    let channel = channels::get(&app.pool, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no channel has this id".into()))?;
    Ok(Json(ChannelView::from(channel)).into_response())
}

/// Create a channel (global admin): 201; 409 `already-exists` if the id is taken.
#[utoipa::path(post, path = "/v1/channels", tag = "channels", request_body = CreateChannel,
    responses((status = 201, description = "Created", body = ChannelView,
        headers(("Location" = String, description = "The new channel"))), AdminCreateProblems))]
async fn create(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let body = CreateChannel::read(&body.json)?;
    let id = body.id;
    let update = ChannelUpdate::from(UpdateChannel {
        name: None,
        email_from_address: body.email_from_address.map(Some),
        email_from_name: body.email_from_name.map(Some),
    });
    let created = channels::create(&app.pool, &id, body.name.as_str())
        .await?
        .ok_or(DomainError::AlreadyExists {
            aggregate: "channel",
        })?;
    let channel = if update.email_from_address.is_some() || update.email_from_name.is_some() {
        channels::update(&app.pool, &created.id, &update)
            .await?
            .unwrap_or(created)
    } else {
        created
    };
    let mut response = (StatusCode::CREATED, Json(ChannelView::from(channel))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/channels/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Rename a channel or set its e-mail sender (global admin).
#[utoipa::path(patch, path = "/v1/channels/{id}", tag = "channels", request_body = UpdateChannel,
    params(("id" = String, Path, description = "The channel's id")),
    responses((status = 200, description = "Updated", body = ChannelView), AdminBodyProblems))]
async fn update(
    State(app): State<AppState>,
    Global(_, _): Global<auth::Admins>,
    Path(id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let update = ChannelUpdate::from(UpdateChannel::read(&body.json)?);
    let channel = channels::update(&app.pool, &id, &update)
        .await?
        .ok_or_else(|| ApiError::NotFound("no channel has this id".into()))?;
    Ok(Json(ChannelView::from(channel)).into_response())
}

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
use ordo_domain::DomainError;
use serde::Serialize;
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
use crate::validate::{Field, Validation};
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
/// 403), or the one a global key's `?channel=` names (`None`: every channel).
pub(crate) fn read_scope(caller: &Caller, q: &Params) -> Result<Option<String>, ApiError> {
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
        (None, named) => Ok(named.map(|n| n.as_str().to_owned())),
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

/// `POST /v1/channels`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the request's shape, for the OpenAPI document; parsed by `parse_create`
pub struct CreateChannel {
    /// A lowercase slug: `a-z`, `0-9` and `-`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub id: String,
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The sender address of this channel's e-mail (default: the server's).
    pub email_from_address: Option<String>,
    /// The sender name of this channel's e-mail.
    pub email_from_name: Option<String>,
}

/// `PATCH /v1/channels/{id}`: the fields to change; `null` e-mail fields fall back to the
/// server's sender.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the request's shape, for the OpenAPI document; parsed by `parse_update`
pub struct UpdateChannel {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub email_from_address: Option<String>,
    pub email_from_name: Option<String>,
}

fn name_field(v: &mut Validation, o: &Map<String, Value>, required: bool) -> Option<String> {
    let name = if required {
        v.required::<ordo_domain::values::Text>(o, "", "name")
    } else {
        v.optional::<ordo_domain::values::Text>(o, "", "name")
    }?;
    if name.as_str().chars().count() > channels::MAX_NAME_LEN {
        v.error(
            "name",
            format!("must be at most {} characters", channels::MAX_NAME_LEN),
        );
        return None;
    }
    Some(name.as_str().to_owned())
}

/// An e-mail sender field: absent → `None`, `null` → `Some(None)`, a value → `Some(Some)`.
fn sender_field(
    v: &mut Validation,
    o: &Map<String, Value>,
    key: &str,
    address: bool,
) -> Option<Option<String>> {
    match o.get(key)? {
        Value::Null => Some(None),
        Value::String(raw) => {
            let raw = raw.trim();
            let valid = if address {
                channels::valid_sender_address(raw)
            } else {
                !raw.is_empty() && raw.chars().count() <= 200 && !raw.chars().any(char::is_control)
            };
            if valid {
                Some(Some(raw.to_owned()))
            } else if address {
                v.error(key, "must be an e-mail address");
                None
            } else {
                v.error(
                    key,
                    "must be 1 to 200 characters, without control characters",
                );
                None
            }
        }
        _ => {
            v.error(key, "must be a string or null");
            None
        }
    }
}

fn parse_update(
    json: &Value,
    creating: bool,
) -> Result<(Option<ChannelId>, ChannelUpdate), ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let id = if creating {
        match v.required::<String>(o, "", "id") {
            Some(raw) => match ChannelId::parse(&raw) {
                Ok(id) => Some(id),
                Err(message) => {
                    v.error("id", message);
                    None
                }
            },
            None => None,
        }
    } else {
        None
    };
    let name = name_field(&mut v, o, creating);
    let email_from_address = sender_field(&mut v, o, "email_from_address", true);
    let email_from_name = sender_field(&mut v, o, "email_from_name", false);
    let update = ChannelUpdate {
        name,
        email_from_address,
        email_from_name,
    };
    v.finish(|| {
        if creating {
            Some((Some(id?), update))
        } else {
            Some((None, update))
        }
    })
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
    let (id, update) = parse_update(&body.json, true)?;
    let (Some(id), Some(name)) = (id, update.name.as_deref()) else {
        return Err(ApiError::Internal(
            "a parsed creation has an id and a name".into(),
        ));
    };
    let created =
        channels::create(&app.pool, &id, name)
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
    let (_, update) = parse_update(&body.json, false)?;
    let channel = channels::update(&app.pool, &id, &update)
        .await?
        .ok_or_else(|| ApiError::NotFound("no channel has this id".into()))?;
    Ok(Json(ChannelView::from(channel)).into_response())
}

/// `?channel=` on lists, analytics and notifications, for the OpenAPI document.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ChannelParam {
    /// Only this channel's (a global key; default: every channel). A scoped key sees its own
    /// channel only; naming another is 403.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    channel: Option<String>,
}

//! `/v1/webhooks` (admins): register endpoints and manage their lifecycle
//! (`endpoints.rs`), read and retry their deliveries (`deliveries.rs`). The integration
//! worker writes the deliveries; the delivery pool sends them.

mod deliveries;
mod endpoints;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_commands::channels::ChannelId;
use ordo_workers::{egress, integration};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Global};
use crate::extract::CommandBody;
use crate::openapi::AdminBodyProblems;
use crate::validate::{request_body, Field, Scalar, Validation};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, endpoints::list))
        .routes(routes!(
            endpoints::show,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::disable))
        .routes(routes!(endpoints::enable))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(deliveries::send_test))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::show))
        .routes(routes!(deliveries::retry))
}

const MAX_URL: usize = 2048;

/// `http://` or `https://`, then a host, no spaces or control characters.
fn url_problem(url: &str) -> Option<&'static str> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        None => Some("must be an http:// or https:// URL"),
        Some(rest) if rest.is_empty() || rest.starts_with(['/', '?', '#', ':']) => {
            Some("must name a host")
        }
        Some(_) if url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Some("must not contain spaces or control characters")
        }
        Some(_) if url.len() > MAX_URL => Some("must be at most 2048 characters"),
        Some(_) => None,
    }
}

/// `url`, checked.
/// A URL whose host is, or resolves to, a non-public address is refused (422 on `url`)
/// unless `ORDO_WEBHOOK_ALLOW_PRIVATE=true`; the worker's client checks again at connect
/// time (see `ordo_workers::egress`).
async fn check_egress(app: &AppState, url: &str) -> Result<(), ApiError> {
    egress::check_url(url, app.config.webhook_allow_private)
        .await
        .map_err(|refused| ApiError::field("url", refused.to_string()))
}

/// A webhook's `url`: `http://` or `https://` with a host ([`url_problem`]).
pub struct WebhookUrl(String);

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        match url_problem(&url) {
            Some(message) => Err(serde::de::Error::custom(message)),
            None => Ok(Self(url)),
        }
    }
}

impl Scalar for WebhookUrl {}

/// `event_types`, each a valid pattern, not empty.
fn event_types_field(v: &mut Validation, o: &Map<String, Value>) -> Option<Vec<String>> {
    let event_types = v.array(o, "", "event_types", |v, item, path| {
        let Some(pattern) = item.as_str() else {
            v.error(path, "must be a string");
            return None;
        };
        if integration::valid_event_type(pattern) {
            Some(pattern.to_owned())
        } else {
            v.error(
                path,
                "must be an event type (`order.placed`), a prefix (`payment.*`) or `*`",
            );
            None
        }
    });
    if event_types.as_ref().is_some_and(Vec::is_empty) {
        v.error("event_types", "must not be empty");
    }
    event_types
}

/// `event_types` (`EventTypes` in a registration, `Option<EventTypes>`, left out to keep
/// them, in an update).
pub struct EventTypes(Vec<String>);

impl Field for EventTypes {
    fn read(v: &mut Validation, o: &Map<String, Value>, _: &str, _: &str) -> Option<Self> {
        event_types_field(v, o).map(Self)
    }
}

impl Field for Option<EventTypes> {
    fn read(v: &mut Validation, o: &Map<String, Value>, _: &str, key: &str) -> Option<Self> {
        let event_types = o.contains_key(key).then(|| event_types_field(v, o));
        Some(event_types.flatten().map(EventTypes))
    }
}

/// `*`, an event type (`order.placed`) or a prefix (`payment.*`): dot-separated segments of
/// lower-case letters, digits, `_` or `-` (`integration::valid_event_type`): how the
/// document describes each of `event_types`.
pub struct EventTypePattern;

impl PartialSchema for EventTypePattern {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$"))
            .examples(["order.placed"]);
        RefOr::T(Schema::Object(schema.build()))
    }
}

impl ToSchema for EventTypePattern {}

/// A webhook's `description`: at most [`MAX_DESCRIPTION`] characters.
pub struct Description(String);

impl<'de> Deserialize<'de> for Description {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let description = String::deserialize(d)?;
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(serde::de::Error::custom("must be at most 500 characters"));
        }
        Ok(Self(description))
    }
}

impl Scalar for Description {}

const MAX_DESCRIPTION: usize = 500;

request_body! {
    pub struct RegisterWebhook {
        /// `http://` or `https://` with a host, at most 2048 characters.
        #[schema(
            value_type = String,
            example = "https://shop.example.com/hooks/ordo",
            max_length = 2048,
            pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#:\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$"
        )]
        pub url: WebhookUrl,
        /// Event types (`order.placed`), prefixes (`payment.*`) or `*`.
        #[schema(value_type = Vec<EventTypePattern>, min_items = 1,
            example = json!(["order.placed", "payment.*"]))]
        pub event_types: EventTypes,
        /// What the endpoint is for; at most 500 characters.
        #[schema(value_type = Option<String>, max_length = 500)]
        pub description: Option<Description>,
        /// Only this sales channel's events; absent or null: every channel's.
        pub channel: Option<ChannelId>,
    }
}

/// An endpoint's id and its signing secret: the answer to registering an endpoint and to
/// rotating its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookCreated)]
struct Secret {
    id: Uuid,
    /// The signing secret (`whsec_...`), shown only here.
    secret: String,
}

/// Register a webhook endpoint (admin). 201 `{"id", "secret"}` with
/// `Location: /v1/webhooks/{id}`; the secret is shown once. A URL whose host is or resolves
/// to a non-public address (loopback, private, link-local, ULA, multicast) is a 422 unless
/// `ORDO_WEBHOOK_ALLOW_PRIVATE=true`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = RegisterWebhook,
    responses((status = 201, description = "Registered", body = Secret,
        headers(("Location" = String, description = "The new endpoint"))), AdminBodyProblems))]
async fn register(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let RegisterWebhook {
        url: WebhookUrl(url),
        event_types: EventTypes(event_types),
        description,
        channel,
    } = RegisterWebhook::read(&body.json)?;
    if let Some(channel) = &channel {
        super::channels::known(&app, channel).await?;
    }
    check_egress(&app, &url).await?;
    let channel = channel.as_ref().map(|c| c.as_str());
    let (id, secret) = integration::register(
        &app.pool,
        &url,
        &event_types,
        description.as_ref().map(|d| d.0.as_str()),
        channel,
    )
    .await?;
    let mut response = (StatusCode::CREATED, Json(Secret { id, secret })).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/webhooks/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(url_problem("http://127.0.0.1:8080/hook"), None);
        assert_eq!(url_problem("HTTPS://example.com"), None);
        assert!(url_problem("ftp://example.com").is_some());
        assert!(url_problem("http://").is_some());
        assert!(url_problem("https:///path").is_some());
        assert!(url_problem("http://exa mple.com").is_some());
        assert!(url_problem("example.com").is_some());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let err = RegisterWebhook::read(
            &json!({"url": "nope", "event_types": ["order.placed", 3, "x*"]}),
        );
        let Err(ApiError::Validation(errors)) = err else {
            panic!("expected validation errors");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "event_types[1]", "event_types[2]"]);
        let Err(ApiError::Validation(errors)) =
            RegisterWebhook::read(&json!({"url": "http://h", "event_types": []}))
        else {
            panic!("expected validation errors");
        };
        assert_eq!(errors[0].field, "event_types");
        assert!(RegisterWebhook::read(&json!({"url": "http://h", "event_types": ["*"]})).is_ok());
    }
}

//! `/v1/webhooks` (admins): register endpoints and manage their lifecycle
//! (`endpoints.rs`), read and retry their deliveries (`deliveries.rs`). The integration
//! worker writes the deliveries; the delivery pool sends them.

mod deliveries;
mod endpoints;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ordo_workers::{egress, integration};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Global};
use crate::extract::CommandBody;
use crate::openapi::{admin, AdminBodyProblems};
use crate::validate::Validation;
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

fn url_field(v: &mut Validation, url: Option<String>) -> Option<String> {
    url.and_then(|url| match url_problem(&url) {
        Some(message) => {
            v.error("url", message);
            None
        }
        None => Some(url),
    })
}

/// `event_types`, each a valid pattern, not empty.
fn event_types_field(
    v: &mut Validation,
    o: &serde_json::Map<String, Value>,
) -> Option<Vec<String>> {
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

/// `description`: optional, at most [`MAX_DESCRIPTION`] characters.
fn description_field(v: &mut Validation, o: &serde_json::Map<String, Value>) -> Option<String> {
    let description: Option<String> = v.optional(o, "", "description");
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        v.error("description", "must be at most 500 characters");
    }
    description
}

const MAX_DESCRIPTION: usize = 500;

/// A registration: URL, event types, optional description, optional channel.
type Registration = (
    String,
    Vec<String>,
    Option<String>,
    Option<ordo_commands::channels::ChannelId>,
);

fn parse_register(json: &Value) -> Result<Registration, ApiError> {
    let mut v = Validation::new();
    let Some(o) = v.object(json, "") else {
        return v.finish(|| None);
    };
    let url = v.required::<String>(o, "", "url");
    let url = url_field(&mut v, url);
    let event_types = event_types_field(&mut v, o);
    let description = description_field(&mut v, o);
    let channel = super::channels::optional_channel(&mut v, o);
    v.finish(|| Some((url?, event_types?, description, channel?)))
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
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = admin::RegisterWebhook,
    responses((status = 201, description = "Registered", body = Secret,
        headers(("Location" = String, description = "The new endpoint"))), AdminBodyProblems))]
async fn register(
    State(app): State<AppState>,
    Global(_, _): Global<auth::WebhookAdmins>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let (url, event_types, description, channel) = parse_register(&body.json)?;
    if let Some(channel) = &channel {
        super::channels::known(&app, channel).await?;
    }
    check_egress(&app, &url).await?;
    let channel = channel.as_ref().map(|c| c.as_str());
    let (id, secret) = integration::register(
        &app.pool,
        &url,
        &event_types,
        description.as_deref(),
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
        let err = parse_register(&json!({"url": "nope", "event_types": ["order.placed", 3, "x*"]}));
        let Err(ApiError::Validation(errors)) = err else {
            panic!("expected validation errors");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "event_types[1]", "event_types[2]"]);
        let Err(ApiError::Validation(errors)) =
            parse_register(&json!({"url": "http://h", "event_types": []}))
        else {
            panic!("expected validation errors");
        };
        assert_eq!(errors[0].field, "event_types");
        assert!(parse_register(&json!({"url": "http://h", "event_types": ["*"]})).is_ok());
    }
}

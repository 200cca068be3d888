//! Extractors for what every command request carries (its body, `If-Match`,
//! `Idempotency-Key`, request id, `traceparent` and correlation id), and for a read's query.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;
use crate::routes::Params;

/// Headers a command uses. The OpenAPI document lists those a client sets for the command
/// (`If-Match`, `Idempotency-Key`) from here, with their doc comments.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CommandHeaders {
    /// `"<version>"` as the `ETag` gave it (or `*`): the command fails with 412 if the stream
    /// has moved on.
    // Read as the version; `*` or absent means any version.
    #[param(
        rename = "If-Match",
        value_type = Option<String>,
        nullable = false,
        pattern = r#"^(\*|"[0-9]{1,18}")$"#,
        example = "\"3\""
    )]
    pub if_match: Option<u64>,
    /// Makes a retry safe: the same key and body within 24 h answers the stored response
    /// with `Idempotent-Replayed: true` and records nothing new.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]([ -~]*[!-~])?$"
    )]
    pub idempotency_key: Option<String>,
    #[param(ignore)]
    pub request_id: String,
    #[param(ignore)]
    pub traceparent: String,
    #[param(ignore)]
    pub correlation_id: Uuid,
}

/// The headers of a command that creates a stream: a command's, read the same way, but the
/// document lists no `If-Match`: the stream is new, so there is no version to match (an id
/// already taken is 409 instead).
pub struct CreationHeaders(pub CommandHeaders);

impl IntoParams for CreationHeaders {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = CommandHeaders::into_params(parameter_in);
        params.retain(|p| p.name != "If-Match");
        params
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CreationHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        CommandHeaders::from_request_parts(parts, state)
            .await
            .map(Self)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::BadHeader {
                header: name,
                detail: "must be visible ASCII".into(),
            }),
    }
}

fn parse_if_match(raw: &str) -> Result<Option<u64>, ApiError> {
    if raw == "*" {
        return Ok(None);
    }
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or(ApiError::BadHeader {
            header: "if-match",
            detail: "must be a version in quotes, as the ETag gave it, e.g. \"3\"".into(),
        })
}

/// W3C trace context: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub fn valid_traceparent(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// A fresh trace for a request that did not bring one.
pub fn new_traceparent() -> String {
    let span = Uuid::new_v4().simple().to_string();
    format!("00-{}-{}-01", Uuid::new_v4().simple(), &span[..16])
}

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let if_match = header(headers, "if-match")?
            .map(parse_if_match)
            .transpose()?
            .flatten();
        let idempotency_key = match header(headers, "idempotency-key")? {
            None => None,
            Some(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            Some(_) => {
                return Err(ApiError::BadHeader {
                    header: "idempotency-key",
                    detail: "must be 1 to 255 characters".into(),
                })
            }
        };
        let request_id = header(headers, "x-request-id")?
            .unwrap_or_default()
            .to_owned();
        // The request span's own traceparent when traces are exported (it is the incoming
        // one's child); else the incoming one as it came, or a new trace.
        let incoming = header(headers, "traceparent")?
            .filter(|tp| valid_traceparent(tp))
            .map_or_else(new_traceparent, str::to_owned);
        let traceparent = ordo_runtime::telemetry::current_traceparent(&incoming);
        let correlation_id = header(headers, "x-correlation-id")?
            .and_then(|c| Uuid::parse_str(c).ok())
            .unwrap_or_else(Uuid::new_v4);
        Ok(Self {
            if_match,
            idempotency_key,
            request_id,
            traceparent,
            correlation_id,
        })
    }
}

/// A command's JSON body, parsed, plus the hash that identifies the request for
/// idempotency (method, path and the canonical JSON, so whitespace and key order do not
/// matter). An empty body counts as `{}`.
pub struct CommandBody {
    pub json: Value,
    pub request_hash: String,
}

impl<S: Send + Sync> FromRequest<S> for CommandBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::MalformedJson(rejection.body_text())
                    }
                })?;
        let json = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            let is_json = content_type.as_deref().is_some_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            });
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| ApiError::MalformedJson(format!("the body is not valid JSON: {e}")))?
        };
        let mut hasher = Sha256::new();
        hasher.update(method.as_str());
        hasher.update(b"\n");
        hasher.update(path.as_bytes());
        hasher.update(b"\n");
        hasher.update(json.to_string().as_bytes());
        Ok(Self {
            json,
            request_hash: hex::encode(hasher.finalize()),
        })
    }
}

/// A read's query parameters, each given at most once. A repeated one is a 400 naming it:
/// a list filters on one value per parameter, and taking one of two values silently would
/// answer `?status=placed&status=confirmed` with the confirmed orders only.
pub struct QueryParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut params = Params::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if params.contains_key(name.as_ref()) {
                return Err(ApiError::RepeatedQuery(name.into_owned()));
            }
            params.insert(name.into_owned(), value.into_owned());
        }
        Ok(Self(params))
    }
}

/// A uuid path segment; anything else cannot name a known resource, so it is a 404.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no resource has this id".into()))?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::NotFound(format!("`{raw}` is not an id this API issues")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_a_quoted_version_or_a_star() {
        assert_eq!(parse_if_match("\"3\"").ok(), Some(Some(3)));
        assert_eq!(parse_if_match("*").ok(), Some(None));
        assert!(parse_if_match("3").is_err());
        assert!(parse_if_match("\"x\"").is_err());
    }

    #[test]
    fn traceparent_follows_the_w3c_format() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-abc-def-01"));
        assert!(valid_traceparent(&new_traceparent()));
    }
}

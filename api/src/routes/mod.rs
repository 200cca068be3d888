//! One module per resource, each with its `router()`.

pub mod audit;
pub mod customers;
pub mod health;
pub mod orders;
pub mod payments;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// A read: the JSON plus an `ETag` of the version it reflects.
pub(crate) fn versioned_json(version: u64, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

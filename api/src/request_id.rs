//! `x-request-id`: the client may name its request, within bounds. The id is stored with
//! every event a command records and echoed on the response, so an unbounded one would let a
//! client write ~400 KB (hyper's header limit) into the append-only log per command, past
//! the body limit. It is never the event's causation: that is Ordo's own (see
//! `respond::metadata`).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest `x-request-id` accepted.
pub const MAX_LEN: usize = 128;

/// 1 to [`MAX_LEN`] token characters (RFC 9110 `tchar`: letters, digits and
/// ``!#$%&'*+-.^_`|~``), which covers UUIDs, ULIDs and the usual proxy-made ids.
pub fn valid(raw: &[u8]) -> bool {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (1..=MAX_LEN).contains(&raw.len()) && raw.iter().all(tchar)
}

/// Refuses a request whose `x-request-id` is not [`valid`] with a 400 problem (which carries
/// a fresh id of the server's, as every response has one). Runs before the id is generated,
/// propagated or recorded anywhere.
pub async fn check(request: Request, next: Next) -> Response {
    match request.headers().get(&REQUEST_ID) {
        Some(id) if !valid(id.as_bytes()) => {
            let mut response = ApiError::BadHeader {
                header: "x-request-id",
                detail: format!("must be 1 to {MAX_LEN} token characters (letters, digits, `-`, `_`, `.` and the like)"),
            }
            .into_response();
            if let Ok(id) = HeaderValue::from_str(&Uuid::new_v4().to_string()) {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            response
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_tokens() {
        assert!(valid(b"4bf92f35-77b3-4da6-a3ce-929d0e0e4736"));
        assert!(valid(b"01J9ZQ1W5Z8K3Q2V7X4Y6B0C9D"));
        assert!(valid("a".repeat(MAX_LEN).as_bytes()));
        assert!(!valid("a".repeat(MAX_LEN + 1).as_bytes()));
        assert!(!valid(b""));
        for bad in ["has space", "semi;colon", "quote\"", "a,b", "é"] {
            assert!(!valid(bad.as_bytes()), "{bad}");
        }
    }
}

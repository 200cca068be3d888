//! Request-level limits: a deadline per request (a client that sends its body slowly, or a
//! handler stuck on a dependency, frees its slot with a 408 or 503) and a cap on requests in
//! flight (beyond it a request is answered 503 at once, without queueing: a server that
//! queues without bound answers everyone late). Connection-level limits are in
//! [`crate::server`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::ApiError;

/// The request-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// The longest a request may take, body included. Above `ORDO_READ_WAIT_SECS`, so that
    /// a read waiting for `min_position` answers its own 503 first.
    pub timeout: Duration,
    /// Requests handled at once by this process.
    pub max_in_flight: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_in_flight: 1024,
        }
    }
}

/// The state of [`limit`]: the limits and the slots for requests in flight.
#[derive(Clone)]
pub struct Gate {
    limits: RequestLimits,
    slots: Arc<Semaphore>,
}

impl Gate {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_in_flight)),
        }
    }
}

/// Seconds an overloaded server asks a client to wait.
const OVERLOADED_RETRY_AFTER: u32 = 1;

pub async fn limit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Ok(_slot) = gate.slots.try_acquire() else {
        ::metrics::counter!("ordo_http_overloaded_total").increment(1);
        let mut response = ApiError::Overloaded.into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(OVERLOADED_RETRY_AFTER),
        );
        return response;
    };
    match tokio::time::timeout(gate.limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ::metrics::counter!("ordo_http_timed_out_total").increment(1);
            ApiError::RequestTimeout.into_response()
        }
    }
}

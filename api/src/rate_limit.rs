//! Per-API-key rate limiting: a token bucket per key, advertised with the IETF
//! `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers) and
//! enforced with 429 + `Retry-After`. Requests without a valid key get a bucket per client
//! address instead, charged before their key is looked up, so that a flood of missing or
//! made-up keys costs no database queries once the address has used its quota.
//!
//! The limit is per process: each API replica keeps its own buckets, so N replicas behind a
//! load balancer admit up to N times the quota.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::{ApiError, AppState, Caller};

/// A quota of `quota` requests per `window`, refilled continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub quota: u32,
    pub window: Duration,
}

impl RateLimit {
    /// `None` when either number is zero: that disables limiting.
    pub fn new(quota: u32, window_secs: u64) -> Option<Self> {
        (quota > 0 && window_secs > 0).then(|| Self {
            quota,
            window: Duration::from_secs(window_secs),
        })
    }

    /// `"default";q=<quota>;w=<window>`.
    fn policy(&self) -> String {
        format!("\"default\";q={};w={}", self.quota, self.window.as_secs())
    }
}

/// What the bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again (the whole quota is back).
    pub reset_secs: u64,
    /// Seconds until the next request would be admitted (0 when it is now).
    pub retry_after_secs: u64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by API key id (or, for unauthenticated requests, client address).
pub struct RateLimiter<K = Uuid> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Above this many keys, buckets that have refilled completely are forgotten (a full bucket
/// and a missing one behave the same).
const PRUNE_ABOVE: usize = 10_000;

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Take one token for `key` at `now`, if there is one.
    pub fn check(&self, key: K, now: Instant) -> Decision {
        let capacity = f64::from(self.limit.quota);
        let window = self.limit.window.as_secs_f64();
        let refill = |elapsed: Duration| elapsed.as_secs_f64() * capacity / window;
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > PRUNE_ABOVE {
            buckets
                .retain(|_, b| b.tokens + refill(now.saturating_duration_since(b.at)) < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + refill(now.saturating_duration_since(bucket.at))).min(capacity);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let secs = |tokens: f64| (tokens.max(0.0) * window / capacity).ceil() as u64;
        Decision {
            allowed,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: secs(capacity - bucket.tokens),
            retry_after_secs: if allowed {
                0
            } else {
                secs(1.0 - bucket.tokens).max(1)
            },
        }
    }
}

/// Paths never limited: operations endpoints that probes and scrapers call.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// 429 with `Retry-After`.
fn refused(decision: Decision) -> Response {
    tracing::debug!(retry_after = decision.retry_after_secs, "rate limited");
    ::metrics::counter!("ordo_rate_limited_total").increment(1);
    let mut response = ApiError::RateLimited.into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(decision.retry_after_secs),
    );
    response
}

/// Limits authenticated requests per API key, and requests without a key this process
/// knows per client address (before the key is looked up). A request without a valid key
/// that is within its address's quota passes through, so that its handler answers 401 (or
/// 503 when keys cannot be looked up); the caller found here is left in the request's
/// extensions for the handler's extractor.
pub async fn limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body): (Parts, _) = request.into_parts();
    // The console's pages carry a session cookie, not a key; the console limits its
    // sessions itself.
    let console = request_path_is_console(&parts);
    if let (false, Some(anonymous), Some(ip)) = (
        console,
        &app.anonymous_limiter,
        crate::server::peer(&parts.extensions),
    ) {
        let known = crate::auth::bearer(&parts).is_some_and(|key| app.keys.knows(key));
        if !known {
            let decision = anonymous.check(ip.ip(), Instant::now());
            if !decision.allowed {
                return refused(decision);
            }
        }
    }
    let Some(limiter) = app.rate_limiter.clone() else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let caller = match Caller::authenticate(&parts, &app).await {
        Ok(caller) => caller,
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let decision = limiter.check(caller.key_id, Instant::now());
    parts.extensions.insert(caller);
    let mut response = if decision.allowed {
        next.run(Request::from_parts(parts, body)).await
    } else {
        refused(decision)
    };
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&limiter.limit().policy()) {
        headers.insert(RATELIMIT_POLICY, policy);
    }
    let current = format!(
        "\"default\";r={};t={}",
        decision.remaining, decision.reset_secs
    );
    if let Ok(current) = HeaderValue::from_str(&current) {
        headers.insert(RATELIMIT, current);
    }
    response
}

fn request_path_is_console(parts: &Parts) -> bool {
    let path = parts.uri.path();
    path == "/console" || path.starts_with("/console/")
}

/// The per-address limiter's key type.
pub type AddressLimiter = RateLimiter<IpAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(quota: u32, window_secs: u64) -> RateLimiter<Uuid> {
        RateLimiter::new(RateLimit::new(quota, window_secs).expect("a limit"))
    }

    #[test]
    fn zero_quota_or_window_disables_limiting() {
        assert_eq!(RateLimit::new(0, 60), None);
        assert_eq!(RateLimit::new(10, 0), None);
    }

    #[test]
    fn a_key_gets_its_quota_then_is_refused_with_a_retry_after() {
        let limiter = limiter(3, 60);
        let (key, now) = (Uuid::new_v4(), Instant::now());
        let remaining: Vec<u32> = (0..3).map(|_| limiter.check(key, now).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(key, now);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // One token comes back every 20 s; the whole quota in 60 s.
        assert_eq!(refused.retry_after_secs, 20);
        assert_eq!(refused.reset_secs, 60);
    }

    #[test]
    fn tokens_come_back_over_the_window() {
        let limiter = limiter(3, 60);
        let (key, start) = (Uuid::new_v4(), Instant::now());
        for _ in 0..3 {
            assert!(limiter.check(key, start).allowed);
        }
        assert!(!limiter.check(key, start + Duration::from_secs(19)).allowed);
        let later = limiter.check(key, start + Duration::from_secs(21));
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
        let full = limiter.check(key, start + Duration::from_secs(600));
        assert_eq!(full.remaining, 2, "never more than the quota");
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let limiter = limiter(1, 60);
        let now = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(limiter.check(a, now).allowed);
        assert!(!limiter.check(a, now).allowed);
        assert!(limiter.check(b, now).allowed);
    }

    #[test]
    fn operations_endpoints_are_exempt() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/x",
        ] {
            assert!(exempt(path), "{path}");
        }
        for path in ["/v1/orders", "/docsx", "/"] {
            assert!(!exempt(path), "{path}");
        }
    }
}

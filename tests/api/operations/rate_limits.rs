//! Per-API-key rate limits: IETF `RateLimit-Policy` / `RateLimit` fields on every limited
//! response, 429 + `Retry-After` past the quota, operations endpoints exempt.

use ordo_api::Role::{Storefront, Support};

use crate::helpers::{read, spawn_app_with};

/// `"default";r=<remaining>;t=<reset>` → (remaining, reset).
fn current(header: Option<&str>) -> (u64, u64) {
    let header = header.expect("a RateLimit field");
    let rest = header
        .strip_prefix("\"default\";r=")
        .unwrap_or_else(|| panic!("RateLimit: {header}"));
    let (r, t) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("RateLimit: {header}"));
    (r.parse().unwrap(), t.parse().unwrap())
}

#[tokio::test]
async fn a_key_sees_its_quota_shrink_then_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 3;
        c.rate_limit_window_secs = 60;
    })
    .await;

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = app.get(Storefront, "/v1/orders").await;
        resp.assert_status(200);
        assert_eq!(
            resp.header("ratelimit-policy"),
            Some("\"default\";q=3;w=60")
        );
        let (r, t) = current(resp.header("ratelimit"));
        assert!((1..=60).contains(&t), "reset within the window: {t}");
        remaining.push(r);
    }
    assert_eq!(remaining, [2, 1, 0]);

    let refused = app.get(Storefront, "/v1/orders").await;
    refused.assert_problem(429, "rate-limited");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    // One request comes back every 60 s / 3 = 20 s.
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"default\";q=3;w=60")
    );
    assert_eq!(current(refused.header("ratelimit")).0, 0);

    // Commands count against the same key; another key has a bucket of its own.
    app.post(Storefront, "/v1/customers", serde_json::json!({}))
        .await
        .assert_problem(429, "rate-limited");
    let other = app.get(Support, "/v1/orders").await;
    other.assert_status(200);
    assert_eq!(current(other.header("ratelimit")).0, 2);

    // Refusals are counted (the recorder is process-wide: at least these two).
    let text = crate::operations::metrics::scrape(&app).await;
    let refused_total = crate::operations::metrics::has(&text, "ordo_rate_limited_total", &[]);
    assert!(refused_total >= 2.0, "{refused_total}");
}

#[tokio::test]
async fn operations_endpoints_and_unauthenticated_requests_are_not_limited() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 1;
        c.rate_limit_window_secs = 3600;
    })
    .await;
    for path in ["/healthz", "/readyz", "/healthz", "/readyz"] {
        let resp = read(app.client.get(app.url(path)).send().await.unwrap()).await;
        resp.assert_status(200);
        assert_eq!(resp.header("ratelimit"), None, "{path} is exempt");
    }
    // Without a valid key the answer is 401, before any limiting.
    for _ in 0..3 {
        let resp = read(
            app.client
                .get(app.url("/v1/orders"))
                .bearer_auth("ordo_not_a_key")
                .send()
                .await
                .unwrap(),
        )
        .await;
        resp.assert_problem(401, "unauthorized");
        assert_eq!(resp.header("ratelimit-policy"), None);
    }
    // …and none of that used the key's one request.
    app.get(Storefront, "/v1/orders").await.assert_status(200);
    app.get(Storefront, "/v1/orders")
        .await
        .assert_problem(429, "rate-limited");
}

#[tokio::test]
async fn a_zero_quota_turns_limiting_off() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    for _ in 0..5 {
        let resp = app.get(Storefront, "/v1/orders").await;
        resp.assert_status(200);
        assert_eq!(resp.header("ratelimit-policy"), None);
        assert_eq!(resp.header("ratelimit"), None);
    }
}
